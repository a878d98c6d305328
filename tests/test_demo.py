"""evoq-data demo end to end: photos -> distort -> pairs -> vote -> aggregate -> push -> eval."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from evoq_data.cli import app

runner = CliRunner()
pytest.importorskip("pypiqe")
pytest.importorskip("skimage")


@pytest.mark.parametrize("photos", ["0", "-1", "10"])
def test_demo_photos_out_of_range_is_a_user_error(tmp_path, photos):
    from fixtures.cli import assert_user_error

    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "d"), "--photos", photos, "-q"])
    assert_user_error(result, "--photos must be in [1, 9]")
    assert not (tmp_path / "d").exists()


def test_demo_piqe_labels_beat_chance(tmp_path):
    out = tmp_path / "demo"
    res = runner.invoke(app, ["demo", "--out", str(out), "--photos", "3", "-k", "4", "-q"])
    assert res.exit_code == 0, res.output
    acc = json.loads((out / "eval" / "accuracy.json").read_text())
    pairs = pq.read_table(out / "pairs.parquet")
    # 3 references x 5 types x C(6, 2) = 225 synthetic pairs, every one with a known order
    assert pairs.num_rows == 225 and acc["with_truth"] == 225
    # random crops make some pairs 2-2 ties at K = 4 (measured 198 decisive of 225, accuracy 0.78)
    assert acc["decisive"] >= 180
    # Chance is 0.5; with >= 180 decisive pairs its standard deviation is <= 0.038, so 0.65
    # is about 4 SD above chance (p < 1e-4). PIQE on whole images measured 0.76 here
    # (blur/JPEG/noise ~0.9, contrast and saturation near chance: PIQE works on grey levels).
    assert acc["accuracy"] >= 0.65
    for kind in ("blur", "jpeg", "noise"):
        assert acc["by_group"][kind]["accuracy"] >= 0.8, kind
    assert f"**{100 * acc['accuracy']:.1f}%**" in res.output
    for key in ("photos", "distorted", "votes", "prefs", "dataset", "eval"):
        assert str(out / key) in res.output
    # the dataset folder is a loadable versioned dataset with the aggregate's rows
    import datasets

    ds = datasets.load_dataset(str(out / "dataset"), "preferences", split="train")
    prefs = pq.read_table(out / "prefs" / "preferences.parquet")
    assert ds.num_rows == prefs.num_rows == 225
    assert sorted(ds["pair_id"]) == sorted(pairs.column("pair_id").to_pylist())
    votes = pq.ParquetDataset(sorted((out / "votes").glob("votes-*.parquet"))).read().to_pylist()
    assert len(votes) == 225 * 4 and {v["engine"] for v in votes} == {"piqe"}
    # the demo's judge crops at random (random_crop=0.7), so its votes disagree: the
    # agreement histogram has more than one bar (a deterministic judge gives only 1.0)
    assert {v["model"] for v in votes} == {"piqe+random_crop=0.7"}
    stats = json.loads((out / "prefs" / "stats.json").read_text())
    bars = [h for h in stats["agreement"]["histogram"] if h["pairs"]]
    assert len(bars) > 1, bars
    assert sum(h["pairs"] for h in bars) == 225


def test_demo_with_a_vlm_engine(tmp_path, tiny_vlm):
    out = tmp_path / "demo"
    res = runner.invoke(app, ["demo", "--out", str(out), "--photos", "1", "--num-pairs", "3",
                              "-k", "2", "--max-tokens", "4", "--engine", "transformers",
                              "--model", str(tiny_vlm), "-q"])
    assert res.exit_code == 0, res.output
    votes = pq.ParquetDataset(sorted((out / "votes").glob("votes-*.parquet"))).read().to_pylist()
    assert len(votes) == 6 and {v["engine"] for v in votes} == {"transformers"}
    acc = json.loads((out / "eval" / "accuracy.json").read_text())
    assert acc["pairs"] == 3 and acc["with_truth"] == 3
    assert acc["decisive"] + acc["undecided"] == 3  # a random model's invalid votes: undecided
    rerun = runner.invoke(app, ["demo", "--out", str(out), "-q"])
    assert "already holds a demo run" in str(rerun.exception)


@pytest.mark.slow
def test_full_default_demo_under_three_minutes(tmp_path):
    """The README's command as a user runs it: 9 photos, K = 32, every synthetic pair."""
    import time

    started = time.perf_counter()
    res = runner.invoke(app, ["demo", "--out", str(tmp_path / "demo"), "-q"])
    seconds = time.perf_counter() - started
    assert res.exit_code == 0, res.output
    acc = json.loads((tmp_path / "demo" / "eval" / "accuracy.json").read_text())
    assert acc["decisive"] >= 600 and acc["accuracy"] >= 0.8  # measured 0.858
    assert seconds < 180, seconds
