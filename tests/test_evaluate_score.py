"""evoq-data score and compare, on the PIQE judge and on the tiny Qwen2.5-VL."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pyarrow.parquet as pq
import pytest
from fixtures.votes import spec
from PIL import Image, ImageFilter
from typer.testing import CliRunner

from evoq_data.cli import app
from evoq_data.core.errors import EvoqError
from evoq_data.core.schemas import SCORES_SCHEMA
from evoq_data.evaluate.compare import run_compare
from evoq_data.evaluate.score import SUMMARY_COLUMNS, run_score, summarize
from evoq_data.generation.parse import PARSE_STATUSES, parse_score

runner = CliRunner()

# Longer, real-looking answers to the score prompt (parse.py's own table has the short ones).
REAL_LOOKING = [
    ("<think>The photo is sharp, well exposed, with natural colours and no visible noise. "
     "Minor softness in the corners.</think>\n\\boxed{4.35}", True, 4.35, "ok"),
    ("<think>\nHeavy blur across the frame; edges of the cat are smeared. Strong JPEG "
     "blocking in the sky.\n</think>\nThe final answer is \\boxed{1.60}.", True, 1.6, "ok"),
    ("<think>Looks fine.</think> **Rating:** boxed{3.00}", True, 3.0, "ok"),
    ("<think>I'd rate it 3.5 at first, but the noise is strong. Final: 2.75</think> "
     "\\boxed{2.75} \\boxed{2.75}", True, 2.75, "ok"),
    ("<think>Between 3 and 4.</think> \\boxed{3.5 out of 5}", True, None, "not_a_number"),
    ("<think>Good quality.</think> \\boxed{3,75}", True, None, "not_a_number"),
    ("<think>First guess \\boxed{2.0}, on reflection</think> \\boxed{2.5}", True, None,
     "conflicting_boxes"),
    ("<think>Excellent, a perfect picture!</think> \\boxed{10}", True, None, "out_of_range"),
    ("<think>The image shows a rocket on the launch pad with slight motion", True, None,
     "no_box"),
    ("<think>ok</think>\\boxed{4.}", True, 4.0, "ok"),
    ("   \n ", True, None, "empty"),
    ("4.20", False, 4.2, "ok"),
    ("The quality is good.", False, None, "no_answer"),
    ("\\boxed{2.25}", False, 2.25, "ok"),
]


@pytest.mark.parametrize(("text", "reasoning", "value", "status"), REAL_LOOKING)
def test_score_parser_on_real_looking_answers(text, reasoning, value, status):
    assert parse_score(text, reasoning) == (value, status)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Three real photos and a blurred copy of one of them."""
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "coffee", "chelsea"):
        Image.fromarray(getattr(data, name)()).resize((128, 128)).save(folder / f"{name}.png")
    Image.open(folder / "coffee.png").filter(ImageFilter.GaussianBlur(3)).save(
        folder / "coffee_blur.png")
    return folder


def test_score_piqe_rows_and_summary(photos, tmp_path):
    from evoq_data.generation.engines.piqe import PiqeEngine, piqe_to_score

    out = tmp_path / "scores.parquet"
    res = runner.invoke(app, ["score", "--images", str(photos), "--engine", "piqe",
                              "--samples", "3", "--out", str(out), "-q"])
    assert res.exit_code == 0, res.output
    table = pq.read_table(out)
    assert table.schema.equals(SCORES_SCHEMA)
    rows = table.to_pylist()
    assert len(rows) == 4 * 3 and {r["parse_status"] for r in rows} == {"ok"}
    judge = PiqeEngine()
    for r in rows:
        assert r["score"] == piqe_to_score(judge.piqe(r["image_path"]))
        assert r["model"] == "piqe" and r["model_revision"].startswith("pypiqe==")
    summary = {r["image_path"].rsplit("/", 1)[1]: r
               for r in pq.read_table(tmp_path / "scores.summary.parquet").to_pylist()}
    assert summary["coffee.png"]["score_mean"] > summary["coffee_blur.png"]["score_mean"]
    assert summary["coffee.png"]["score_std"] == 0.0
    assert summary["coffee.png"]["valid_samples"] == 3
    manifest = json.loads((tmp_path / "scores.manifest.json").read_text())
    assert manifest["samples"] == 3 and manifest["prompt_id"] == "score-v1+reasoning"


def test_summarize_counts_invalid_and_uses_valid_only():
    import pyarrow as pa

    cols = {n: [] for n in SCORES_SCHEMA.names}
    for i, s in enumerate([2.0, None, 4.0, 3.0]):
        for n in SCORES_SCHEMA.names:
            cols[n].append({"image_id": "x", "image_path": "/x.png", "sample_index": i,
                            "score": s}.get(n))
    cols["image_id"] += ["y"]
    cols["image_path"] += ["/y.png"]
    for n in SCORES_SCHEMA.names:
        if n not in ("image_id", "image_path"):
            cols[n].append(None)
    row_x, row_y = summarize(pa.table(cols, schema=SCORES_SCHEMA)).to_pylist()
    assert row_x == dict(zip(SUMMARY_COLUMNS, ["x", "/x.png", 3.0,
                                               statistics.stdev([2.0, 4.0, 3.0]), 3, 1, 4], strict=True))
    assert row_y["score_mean"] is None and row_y["score_std"] is None
    assert (row_y["valid_samples"], row_y["invalid_samples"]) == (0, 1)


def test_compare_piqe_prefers_the_sharp_photo(photos):
    res = runner.invoke(app, ["compare", str(photos / "coffee_blur.png"),
                              str(photos / "coffee.png"), "--engine", "piqe", "--votes", "5"])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[0].startswith("better: B (")
    assert "votes: A 0, B 5, invalid 0 of 5" in res.output
    tally = run_compare(photos / "coffee.png", photos / "coffee_blur.png", spec("piqe", None), votes=4)
    assert tally["by_order"] == {"a_first": {"a": 2, "b": 0, "invalid": 0},
                                 "b_first": {"a": 2, "b": 0, "invalid": 0}}
    assert tally["better"] == "a" and tally["vote_fraction_a"] == 1.0


def test_compare_same_image_is_undecided_with_counted_failures(photos):
    tally = run_compare(photos / "coffee.png", photos / "coffee.png", spec("piqe", None), votes=4)
    assert tally["better"] is None and tally["invalid_votes"] == 4
    assert tally["parse_status"] == {"no_box": 4}


def test_score_and_compare_on_tiny_vlm(tiny_vlm, photos, tmp_path):
    out = tmp_path / "s.parquet"
    res = run_score(photos / "coffee.png", spec("transformers", str(tiny_vlm), max_tokens=8), out, samples=3, quiet=True)
    rows = pq.read_table(out).to_pylist()
    assert res["samples"] == len(rows) == 3
    assert all(r["parse_status"] in PARSE_STATUSES and r["raw_text"] is not None for r in rows)
    assert all((r["score"] is None) == (r["parse_status"] != "ok") for r in rows)
    assert [r["seed"] - rows[0]["seed"] for r in rows] == [0, 1, 2]
    again = tmp_path / "again.parquet"
    run_score(photos / "coffee.png", spec("transformers", str(tiny_vlm), max_tokens=8), again, samples=3, quiet=True)
    assert pq.read_table(again).column("raw_text").to_pylist() == [r["raw_text"] for r in rows]
    summ = pq.read_table(tmp_path / "s.summary.parquet").to_pylist()[0]
    assert summ["valid_samples"] + summ["invalid_samples"] == 3
    assert summ["invalid_samples"] == res["invalid_samples"]
    tally = run_compare(photos / "coffee.png", photos / "chelsea.png", spec("transformers", str(tiny_vlm), max_tokens=8), votes=3)
    assert tally["votes_a"] + tally["votes_b"] + tally["invalid_votes"] == 3
    assert [a["order"] for a in tally["answers"]] == ["a_first", "a_first", "b_first"]
    assert sum(tally["parse_status"].values()) == 3


@pytest.mark.parametrize(("args", "message"), [
    (["score", "--images", "{tmp}/none", "--engine", "piqe"], "image folder not found"),
    (["score", "--images", "{tmp}/a.png", "--engine", "transformers"], "needs --model"),
    (["score", "--images", "{tmp}/a.png", "--engine", "piqe", "--samples", "0"],
     "--samples must be at least 1"),
    (["score", "--images", "{tmp}/a.png", "--engine", "piqe", "--samples", "1000000000000"],
     "--samples must be at most 4096"),
    (["compare", "{tmp}/a.png", "{tmp}/missing.png", "--engine", "piqe"], "cannot read image"),
])
def test_bad_input_is_one_line(tmp_path, args, message):
    Image.fromarray(np.zeros((8, 8, 3), "uint8")).save(tmp_path / "a.png")
    res = runner.invoke(app, [a.format(tmp=tmp_path) for a in args])
    assert isinstance(res.exception, EvoqError), res.output
    assert message in str(res.exception)


# --- resume (the vote store's guarantees) ------------------------------------------------

def _pool(folder, n, size=160):
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    base = data.astronaut()
    for i in range(n):
        crop = base[i * 16 : i * 16 + 320, (i % 5) * 30 : (i % 5) * 30 + 320]
        Image.fromarray(crop).resize((size, size)).filter(
            ImageFilter.GaussianBlur(i % 4)).save(folder / f"im{i:02d}.png")
    return folder


def _score_cmd(images, out):
    import sys

    return [sys.executable, "-m", "evoq_data.cli", "score", "--images", str(images),
            "--engine", "piqe", "--samples", "2", "--chunk-images", "1", "--seed", "4",
            "--out", str(out), "--quiet"]


KEYS = ("image_id", "image_path", "sample_index", "raw_text", "score", "parse_status",
        "model", "model_revision", "engine", "prompt_id", "seed")


def _rows(path):
    return [tuple(r[k] for k in KEYS) for r in pq.read_table(path).to_pylist()]


def test_sigkill_then_rerun_gives_the_uninterrupted_scores(tmp_path):
    import os
    import signal
    import subprocess
    import time

    pytest.importorskip("pypiqe")
    images = _pool(tmp_path / "pool", 16, size=192)
    reference = tmp_path / "ref.parquet"
    run_score(images, spec("piqe"), reference, samples=2, seed=4, chunk_images=5, quiet=True)
    out = tmp_path / "killed.parquet"
    parts = tmp_path / "killed.parts"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(_score_cmd(images, out), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(parts.glob("scores-*.parquet"))) < 3:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "the kill should land mid-run"
    done = {r["image_id"] for p in parts.glob("scores-*.parquet")
            for r in pq.read_table(p).to_pylist()}
    rows_on_disk = sum(pq.read_metadata(p).num_rows for p in parts.glob("scores-*.parquet"))
    assert 0 < len(done) < 16 and rows_on_disk == 2 * len(done)  # complete images only
    resumed = subprocess.run(_score_cmd(images, out), env=env, capture_output=True, text=True,
                             check=True)
    summary = json.loads(resumed.stdout)
    assert summary["images_already_scored"] == len(done)
    assert _rows(out) == _rows(reference)
    assert pq.read_table(tmp_path / "killed.summary.parquet").to_pylist() == \
        pq.read_table(tmp_path / "ref.summary.parquet").to_pylist()
    assert not parts.exists()  # assembled, then removed


def test_rerun_with_other_settings_is_refused(tmp_path):
    from fixtures.cli import assert_user_error

    pytest.importorskip("pypiqe")
    images = _pool(tmp_path / "pool", 3)
    out = tmp_path / "s.parquet"
    parts = tmp_path / "s.parts"
    parts.mkdir()  # an unfinished run with 3 samples an image
    (parts / "settings.json").write_text(json.dumps({
        "model": "piqe", "model_revision": spec("piqe").provenance()["model_revision"],
        "engine": "piqe", "prompt_id": "score-v1+reasoning",
        "prompt_sha256": spec("piqe").score_prompt.sha256, "temperature": 1.0, "top_p": 1.0,
        "max_tokens": 1024, "reasoning": True, "seed": 0, "samples": 3, "engine_args": {}}))
    res = runner.invoke(app, ["score", "--images", str(images), "--engine", "piqe",
                              "--samples", "2", "--out", str(out), "-q"])
    assert_user_error(res, str(parts), "samples: 3 -> 2", "remove")
    assert not out.exists()
    # the original settings finish it
    res = runner.invoke(app, ["score", "--images", str(images), "--engine", "piqe",
                              "--samples", "3", "--out", str(out), "-q"])
    assert res.exit_code == 0, res.output
    assert pq.read_metadata(out).num_rows == 9 and not parts.exists()


def test_a_resume_with_other_engine_args_is_refused(tmp_path):
    """Every --engine-arg is recorded and compared: an unfinished run resumed with another
    random_crop would mix scores of two judges."""
    from fixtures.cli import assert_user_error

    pytest.importorskip("pypiqe")
    images = _pool(tmp_path / "pool", 3)
    out = tmp_path / "s.parquet"
    parts = tmp_path / "s.parts"
    parts.mkdir()  # an unfinished run of the stochastic judge
    judge = spec("piqe", engine_args={"random_crop": 0.7})
    (parts / "settings.json").write_text(json.dumps({
        "model": "piqe", "model_revision": judge.provenance()["model_revision"],
        "engine": "piqe", "prompt_id": "score-v1+reasoning",
        "prompt_sha256": judge.score_prompt.sha256, "temperature": 1.0, "top_p": 1.0,
        "max_tokens": 1024, "reasoning": True, "seed": 0, "samples": 2,
        "engine_args": {"random_crop": 0.7}}))

    def score(*extra):
        return runner.invoke(app, ["score", "--images", str(images), "--engine", "piqe",
                                   "--samples", "2", "--out", str(out), "-q", *extra])

    assert_user_error(score("--engine-arg", "random_crop=0.5"),
                      "--engine-arg random_crop: 0.7 -> 0.5", str(parts))
    assert_user_error(score(), "--engine-arg random_crop: 0.7 -> (not given)")
    assert not out.exists()
    res = score("--engine-arg", "random_crop=0.7")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["load_seconds"] >= 0 and summary["score_seconds"] > 0
    assert summary["close_seconds"] >= 0
    assert summary["load_seconds"] + summary["score_seconds"] + summary["close_seconds"] == \
        pytest.approx(summary["seconds"], abs=0.002)
    manifest = json.loads((tmp_path / "s.manifest.json").read_text())
    assert manifest["engine_args"] == {"random_crop": 0.7}


def test_a_folder_with_one_usable_image_is_scored(tmp_path):
    pytest.importorskip("pypiqe")
    folder = tmp_path / "one"
    _pool(folder, 1)
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / "one.parquet"
    res = runner.invoke(app, ["score", "--images", str(folder), "--engine", "piqe",
                              "--samples", "2", "--out", str(out), "-q"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["images"] == 1
    rows = pq.read_table(out).to_pylist()
    assert [r["image_path"] for r in rows] == [str((folder / "im00.png").resolve())] * 2


def test_the_engines_shutdown_is_not_score_time(tmp_path, monkeypatch):
    """As for vote: an engine's slow shutdown is close_seconds, not score_seconds."""
    pytest.importorskip("pypiqe")
    from fixtures.engines import slow_piqe_close
    from fixtures.images import make_images

    slow = 0.6
    slow_piqe_close(monkeypatch, slow)
    make_images(tmp_path / "pool", 3)
    res = runner.invoke(app, ["score", "--images", str(tmp_path / "pool"), "--engine", "piqe",
                              "--samples", "2", "--out", str(tmp_path / "s.parquet"), "-q"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["samples"] == 6
    assert slow <= summary["close_seconds"] < slow + 1.0
    assert summary["score_seconds"] < summary["close_seconds"]
    assert summary["load_seconds"] + summary["score_seconds"] + summary["close_seconds"] == \
        pytest.approx(summary["seconds"], abs=0.002)
