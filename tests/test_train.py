"""``evoq-train grpo`` end to end on CPU: a pushed dataset trains the tiny model, the checkpoint
votes, and bad input is one line with exit code 1."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fixtures.push import make_prefs_dir
from fixtures.train import read_weights
from typer.testing import CliRunner

pytest.importorskip("trl")

from fixtures.cli import assert_user_error as assert_error

runner = CliRunner()


def train_cli(*args: str):
    from evoq_train.cli import app

    return runner.invoke(app, ["grpo", *args])


@pytest.fixture(scope="module")
def pushed(tmp_path_factory) -> Path:
    """The push fixture's PREFS_DIR (5 pairs, one without a valid vote) pushed to a folder."""
    from evoq_data.publish.push import run_push

    root = tmp_path_factory.mktemp("pushed")
    prefs = make_prefs_dir(root / "run")
    run_push(prefs, "me/evoq-tiny", "v1", local_dir=root / "repo", quiet=True)
    return root / "repo"


def test_two_steps_from_a_pushed_dataset_change_weights_and_the_checkpoint_votes(
        pushed, tiny_vlm, tmp_path, image_pool):
    out = tmp_path / "run"
    result = train_cli("--config", "cpu-smoke", "--dataset", str(pushed), "--model", str(tiny_vlm),
                       "--output-dir", str(out), "--quiet")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["global_steps"] == 2
    assert (summary["pairs_total"], summary["pairs_skipped_null_p_star"],
            summary["pairs_used"], summary["prompts"]) == (5, 1, 4, 8)

    before, after = read_weights(tiny_vlm), read_weights(out)
    assert before.keys() == after.keys()
    changed = [k for k in before if not (before[k] == after[k]).all()]
    assert changed, "no parameter moved"

    lineage = json.loads((out / "evoq_train.json").read_text())
    assert lineage["base_model"] == str(tiny_vlm)
    assert lineage["dataset"] == str(pushed)
    assert (lineage["dataset_repo_id"], lineage["dataset_version"]) == ("me/evoq-tiny", "v1")
    meta = json.loads((pushed / "evoq.json").read_text())
    assert lineage["dataset_content_hash"] == meta["content_hash"]
    assert lineage["recipe"] == "cpu-smoke"
    assert lineage["warnings"] == []  # the recipe keeps its KL term (beta 0.05)
    card = (out / "README.md").read_text()
    for needle in (str(tiny_vlm), "me/evoq-tiny", meta["content_hash"], "cpu-smoke",
                   "4 used of 5 (1 skipped"):
        assert needle in card, needle

    # The loop closes: the trained checkpoint votes with the transformers engine.
    from evoq_data.cli import app as data_app

    pairs = tmp_path / "pairs.parquet"
    r = runner.invoke(data_app, ["pairs", "--images", str(image_pool), "--num-pairs", "2",
                                 "--out", str(pairs), "--quiet"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(data_app, ["vote", "--pairs", str(pairs), "--model", str(out),
                                 "--engine", "transformers", "-k", "2", "--max-tokens", "8",
                                 "--out", str(tmp_path / "votes"), "--quiet"])
    assert r.exit_code == 0, r.output
    votes = pq.read_table(sorted((tmp_path / "votes").glob("votes-*.parquet"))).to_pylist()
    assert len(votes) == 4 and {v["model"] for v in votes} == {str(out)}


def test_prefs_dir_trains_directly(tmp_path, tiny_vlm):
    """An aggregate PREFS_DIR (image paths) is accepted as --dataset; one step is enough."""
    prefs = make_prefs_dir(tmp_path / "run")
    result = train_cli("--config", "cpu-smoke", "--dataset", str(prefs), "--model", str(tiny_vlm),
                       "--output-dir", str(tmp_path / "out"), "--max_steps", "1", "--quiet")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["global_steps"], summary["pairs_used"]) == (1, 4)


@pytest.fixture
def no_p_star(tmp_path) -> Path:
    prefs = make_prefs_dir(tmp_path / "run")
    table = pq.read_table(prefs / "preferences.parquet")
    pq.write_table(table.drop_columns(["p_star"]), prefs / "preferences.parquet")
    return prefs


def test_dataset_without_p_star(no_p_star, tiny_vlm, tmp_path):
    assert_error(train_cli("--config", "cpu-smoke", "--dataset", str(no_p_star), "--model",
                           str(tiny_vlm), "--output-dir", str(tmp_path / "o")),
                 "lacks column(s) p_star")


def test_dataset_without_images(tmp_path, tiny_vlm):
    from evoq_data.publish.push import run_push

    prefs = make_prefs_dir(tmp_path / "run")
    run_push(prefs, "me/noimg", "v1", local_dir=tmp_path / "repo", embed_images=False, quiet=True)
    assert_error(train_cli("--config", "cpu-smoke", "--dataset", str(tmp_path / "repo"),
                           "--model", str(tiny_vlm), "--output-dir", str(tmp_path / "o")),
                 "has no images")
    table = pq.read_table(prefs / "preferences.parquet")
    paths = pa.array(["gone.png"] * len(table))
    pq.write_table(table.set_column(table.schema.get_field_index("image_a_path"), "image_a_path",
                                    paths), prefs / "preferences.parquet")
    assert_error(train_cli("--config", "cpu-smoke", "--dataset", str(prefs), "--model",
                           str(tiny_vlm), "--output-dir", str(tmp_path / "o")),
                 "has no images for 5 row(s)", "gone.png")


@pytest.mark.parametrize("args, fragments", [
    (["--config", "no-such-recipe"], ["no recipe 'no-such-recipe'", "cpu-smoke"]),
    (["--config", "cpu-smoke", "--num_generations", "1"], ["num_generations is 1"]),
    (["--config", "cpu-smoke", "--samples_per_device", "3"], ["whole pairs", "even number"]),
    (["--config", "cpu-smoke", "--samples_per_device", "null", "--steps_per_generation", "1"],
     ["cannot hold whole pairs", "multiple of 8"]),
    (["--config", "cpu-smoke", "--learning_rat", "1"], ["unknown option(s): --learning_rat"]),
    (["--config", "cpu-smoke", "--resume-from-checkpoint", "nowhere/checkpoint-9"],
     ["nowhere/checkpoint-9 is not a checkpoint folder"]),
    (["--config", "cpu-smoke", "--resume-from-checkpoint", "true"], ["no checkpoint-N folder"]),
    (["--config", "cpu-smoke", "--lr_scheduler_type", "sideways"],
     ["invalid training settings", "sideways"]),
])
def test_bad_settings(args, fragments, tmp_path, tiny_vlm, pushed):
    assert_error(train_cli(*args, "--dataset", str(pushed), "--model", str(tiny_vlm),
                           "--output-dir", str(tmp_path / "o")), *fragments)


def test_missing_dataset(tmp_path, tiny_vlm):
    assert_error(train_cli("--config", "cpu-smoke", "--dataset", str(tmp_path / "nothing"),
                           "--model", str(tiny_vlm), "--output-dir", str(tmp_path / "o")),
                 "dataset not found")


def test_console_script_exit_code(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "evoq_train.cli", "grpo", "--config", "no-such-recipe",
         "--output-dir", str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no recipe 'no-such-recipe'")


def test_dataset_lineage_reads_evoq_json_and_names_a_broken_one(tmp_path, caplog):
    from evoq_train.trainer import _dataset_lineage

    (tmp_path / "evoq.json").write_text(json.dumps(
        {"repo_id": "me/prefs", "version": "v1", "content_hash": "abc"}))
    assert _dataset_lineage(str(tmp_path), "v1") == {
        "dataset": str(tmp_path), "dataset_revision": "v1", "dataset_repo_id": "me/prefs",
        "dataset_version": "v1", "dataset_content_hash": "abc"}
    (tmp_path / "evoq.json").write_text("{not json")
    with caplog.at_level("WARNING", logger="evoq_train.trainer"):
        lineage = _dataset_lineage(str(tmp_path), None)
    assert lineage == {"dataset": str(tmp_path), "dataset_revision": None}
    assert f"dataset metadata {tmp_path / 'evoq.json'} is not readable JSON" in caplog.text
    assert "lineage without the dataset hash" in caplog.text
