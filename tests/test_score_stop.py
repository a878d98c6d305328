"""`evoq-data score --stop interval`: the rule against an independent computation, the rows
of a stopping run against the full-K run's (the first n of each image's samples), its bad
options refused in one line, and a resume with other stop settings refused. PIQE with random
crops (a stochastic judge, fast) for the runs; one case on the tiny Qwen2.5-VL for the
transformers engine's waves. The Ray runner's rows: tests/test_score_ray.py."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fixtures.cli import assert_user_error
from fixtures.images import make_images
from fixtures.votes import spec
from typer.testing import CliRunner

from evoq_data.cli import app
from evoq_data.core.errors import EvoqError
from evoq_data.evaluate.score import run_score
from evoq_data.evaluate.score_stop import interval_width, replay, score_stop, stop_reason

runner = CliRunner()
CROPS = {"random_crop": 0.7}
T975 = {3: 3.182446305284263, 5: 2.570581835636314, 7: 2.364624251592785}  # t(0.975, df)


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> Path:
    pytest.importorskip("pypiqe")
    root = tmp_path_factory.mktemp("score-stop") / "pool"
    make_images(root, 5, seed=9, size=(64, 48))
    return root


def _width(scores, confidence=0.95):
    """The t interval's width as the textbook writes it (scipy.stats, statistics)."""
    from scipy.stats import t

    n = len(scores)
    return 2 * t.ppf((1 + confidence) / 2, n - 1) * statistics.stdev(scores) / math.sqrt(n)


def test_interval_width_is_the_t_interval():
    assert interval_width([3.0, 4.0, 5.0, 4.0], 0.95) == pytest.approx(
        2 * T975[3] * statistics.stdev([3, 4, 5, 4]) / 2, rel=1e-12)
    scores = [2.5, 2.75, 3.0, 2.5, 2.6, 2.9]
    assert interval_width(scores, 0.95) == pytest.approx(
        2 * T975[5] * statistics.stdev(scores) / math.sqrt(6), rel=1e-12)
    assert interval_width(scores, 0.99) == pytest.approx(_width(scores, 0.99), rel=1e-12)
    assert interval_width([4.0] * 8, 0.95) == 0.0


def test_the_rule_needs_two_waves_of_valid_answers():
    rule = score_stop(16, "interval", wave=4, width=0.5)
    assert rule.wave_ends() == [4, 8, 12, 16]
    # the first request asks two waves: no image can stop after one
    assert [rule.next_end(n) for n in (0, 8, 12)] == [8, 12, 16]
    assert score_stop(6, "interval", wave=2, width=0.5).next_end(4) == 6
    assert score_stop(8).next_end(0) == 8  # fixed: all K at once
    assert stop_reason([4.0] * 4, 4, rule) is None  # one wave: never
    assert stop_reason([4.0] * 8, 8, rule) == "interval"  # 2W identical answers stop
    assert stop_reason([4.0] * 7, 8, rule) is None  # one invalid answer: a third wave
    assert stop_reason([4.0] * 7, 16, rule) == "exhausted"
    assert stop_reason([4.0] * 16, 16, rule) == "exhausted"  # at K: exhausted, as vote says
    spread = [3.0, 4.0, 3.0, 4.0, 3.0, 4.0, 3.0, 4.0]  # width 2 * 2.3646 * 0.5345 / 2.83
    assert _width(spread) == pytest.approx(0.8937, abs=1e-4)
    assert stop_reason(spread, 8, rule) is None
    assert stop_reason(spread, 8, score_stop(16, "interval", wave=4, width=0.9)) == "interval"
    assert replay([3.0, 4.0, None, 4.0] + [3.5] * 8, rule) == (12, "interval")
    assert replay([3.0] * 6, rule) == (6, None)  # ends before the rule stops: broken
    fixed = score_stop(8)
    assert (fixed.wave, fixed.identity()) == (8, {"stop": "fixed", "wave": None,
                                                  "width": None, "confidence": None})
    assert replay([None] * 8, fixed) == (8, "fixed")
    assert score_stop(32, "interval", width=0.2).wave == 8  # default K/4
    assert score_stop(12, "interval", width=0.2).wave == 3
    assert score_stop(5, "interval", width=0.2).wave == 2
    assert score_stop(8, "interval", width=0.2).confidence == 0.95


def _rows(path: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "created_at"}
            for r in pq.read_table(path).to_pylist()]


def test_stopping_rows_are_the_first_n_of_the_full_run(pool, tmp_path):
    full = tmp_path / "full.parquet"
    run_score(pool, spec("piqe", engine_args=CROPS), full, samples=8, seed=4, quiet=True)
    res = runner.invoke(app, ["score", "--images", str(pool), "--engine", "piqe",
                              "--engine-arg", "random_crop=0.7", "--samples", "8", "--seed",
                              "4", "--chunk-images", "2", "--stop", "interval", "--wave", "2",
                              "--width", "0.04", "--out", str(tmp_path / "s.parquet"), "-q"])
    assert res.exit_code == 0, res.output
    by_image: dict[str, list[dict]] = {}
    for r in _rows(full):
        by_image.setdefault(r["image_id"], []).append(r)
    want, used, reasons = [], {}, {}
    for image_id, rows in by_image.items():  # the rule, computed here on the full run's rows
        n, reason = 8, "exhausted"
        for end in (4, 6):
            valid = [r["score"] for r in rows[:end] if r["score"] is not None]
            if len(valid) >= 4 and _width(valid) < 0.04:
                n, reason = end, "interval"
                break
        want += rows[:n]
        used[image_id] = n
        reasons[reason] = reasons.get(reason, 0) + 1
    assert sorted(set(used.values())) == [4, 6, 8] and len(reasons) == 2  # the rule acts
    assert _rows(tmp_path / "s.parquet") == want
    summary = json.loads(res.stdout)
    assert (summary["samples"], summary["samples_planned"]) == (len(want), 40)
    assert summary["samples_share"] == round(len(want) / 40, 4)
    assert summary["stop_reasons"] == dict(sorted(reasons.items()))
    for row in pq.read_table(tmp_path / "s.summary.parquet").to_pylist():
        scores = [r["score"] for r in by_image[row["image_id"]][:used[row["image_id"]]]]
        assert row["total_samples"] == used[row["image_id"]]
        assert row["score_mean"] == pytest.approx(statistics.fmean(scores), abs=1e-12)
    manifest = json.loads((tmp_path / "s.manifest.json").read_text())
    assert {k: manifest[k] for k in ("samples", "stop", "wave", "width", "confidence",
                                     "samples_used")} == \
        {"samples": 8, "stop": "interval", "wave": 2, "width": 0.04, "confidence": 0.95,
         "samples_used": len(want)}
    fixed = json.loads((tmp_path / "full.manifest.json").read_text())
    assert (fixed["stop"], fixed["wave"], fixed["width"]) == ("fixed", None, None)


def test_waves_on_the_tiny_vlm_give_the_full_runs_samples(tiny_vlm, pool, tmp_path):
    """The transformers engine draws sample i of a request seeded s from s + i alone, so
    waves of 2 give the samples one request of K gives (here every answer of the untrained
    model is invalid, so the image runs to K: one request of two waves, since the rule
    cannot stop after one, then one of the third)."""
    image = sorted(pool.glob("*.png"))[0]
    judge = spec("transformers", str(tiny_vlm), max_tokens=4)
    run_score(image, judge, tmp_path / "full.parquet", samples=6, seed=3, quiet=True)
    res = run_score(image, judge, tmp_path / "waves.parquet", samples=6, seed=3, quiet=True,
                    stop="interval", wave=2, width=0.5)
    want = _rows(tmp_path / "full.parquet")
    assert len({r["raw_text"] for r in want}) > 1
    got = _rows(tmp_path / "waves.parquet")
    n = len(got)
    assert got == want[:n] and res["samples"] == n
    assert res["stop_reasons"] == {"exhausted" if n == 6 else "interval": 1}


def test_score_waves_prefill_each_image_once_on_transformers(tiny_vlm, pool):
    """``score_chunk`` marks a wave with waves left ``asked_again``: the transformers engine
    prefills each image's prompt once for all its waves, and frees it after the last."""
    from evoq_data.evaluate.scoring import score_chunk
    from evoq_data.generation.spec import open_engine
    from evoq_data.images.pool import single_image

    chunk = [single_image(p) for p in sorted(pool.glob("*.png"))[:2]]
    judge = spec("transformers", str(tiny_vlm), max_tokens=4)
    eng = open_engine(judge)
    try:
        full = score_chunk(eng, chunk, judge, score_stop(6), seed=3).to_pylist()
        assert eng.prefixes.computed == 2 and eng.prefixes.kept == {}
        waves = score_chunk(eng, chunk, judge, score_stop(6, "interval", wave=2, width=0.5),
                            seed=3).to_pylist()
        # the untrained model's answers are invalid: each image asks all 3 waves, and its
        # prompt is prefilled once (2 more prefixes, not 6), then freed
        assert eng.prefixes.computed == 4 and eng.prefixes.kept == {}
    finally:
        eng.close()
    drop = ("created_at",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in waves] == \
        [{k: v for k, v in r.items() if k not in drop} for r in full]


@pytest.mark.parametrize(("extra", "message"), [
    (["--width", "0.3"], "--width is for --stop interval, not --stop fixed"),
    (["--wave", "4", "--confidence", "0.9"], "--wave, --confidence are for --stop interval"),
    (["--stop", "interval"], "--stop interval needs --width W"),
    (["--stop", "interval", "--width", "0"], "--width must be a number above 0, got 0.0"),
    (["--stop", "interval", "--width", "-1"], "--width must be a number above 0"),
    (["--stop", "interval", "--width", "nan"], "--width must be a number above 0"),
    (["--stop", "interval", "--width", "0.3", "--confidence", "1"],
     "--confidence must be in (0, 1), got 1.0"),
    (["--stop", "interval", "--width", "0.3", "--wave", "1"], "--wave must be at least 2"),
    (["--stop", "interval", "--width", "0.3", "--wave", "4"],
     "2 x --wave 4 = 8 samples), which leaves nothing to save of --samples 8"),
    (["--stop", "decided"], "unknown --stop 'decided'; choose one of fixed, interval"),
])
def test_bad_stop_options_are_one_line(tmp_path, extra, message):
    make_images(tmp_path / "pool", 1)
    out = tmp_path / "s.parquet"
    res = runner.invoke(app, ["score", "--images", str(tmp_path / "pool"), "--engine", "piqe",
                              "--out", str(out), "-q", *extra])
    assert_user_error(res, message)
    assert not out.exists() and not (tmp_path / "s.parts").exists()


def _settings(**stop) -> dict:
    judge = spec("piqe", engine_args=CROPS)
    provenance = judge.provenance()
    return {"model": provenance["model"], "model_revision": provenance["model_revision"],
            "engine": "piqe", "prompt_id": "score-v1+reasoning",
            "prompt_sha256": judge.score_prompt.sha256, "temperature": 1.0, "top_p": 1.0,
            "max_tokens": 1024, "reasoning": True, "seed": 0, "samples": 8, **stop,
            "engine_args": CROPS}


def test_a_resume_with_other_stop_settings_is_refused(pool, tmp_path):
    out, parts = tmp_path / "s.parquet", tmp_path / "s.parts"
    parts.mkdir()  # an unfinished --stop interval run
    (parts / "settings.json").write_text(json.dumps(_settings(
        stop="interval", wave=2, width=0.04, confidence=0.95)))

    def score(*extra):
        return runner.invoke(app, ["score", "--images", str(pool), "--engine", "piqe",
                                   "--engine-arg", "random_crop=0.7", "--samples", "8",
                                   "--out", str(out), "-q", *extra])

    assert_user_error(score(), "stop: 'interval' -> 'fixed'", "wave: 2 -> None",
                      "width: 0.04 -> None", str(parts))
    assert_user_error(score("--stop", "interval", "--wave", "2", "--width", "0.05"),
                      "width: 0.04 -> 0.05")
    assert_user_error(score("--stop", "interval", "--wave", "3", "--width", "0.04"),
                      "wave: 2 -> 3")
    assert not out.exists()
    res = score("--stop", "interval", "--wave", "2", "--width", "0.04")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["samples"] < 40 and not parts.exists()


def test_a_part_cut_before_its_stop_is_refused(pool, tmp_path):
    """Parts are checked against the rule: an image whose samples end before its rule stops
    (a part written by something else) is refused, not averaged."""
    import pyarrow as pa

    from evoq_data.core.schemas import SCORES_SCHEMA
    from evoq_data.evaluate.scoring import write_part

    args = dict(samples=8, seed=0, quiet=True, stop="interval", wave=2, width=0.04)
    run_score(pool, spec("piqe", engine_args=CROPS), tmp_path / "ref.parquet", **args)
    first = pq.read_table(tmp_path / "ref.parquet").to_pylist()[0]
    rows = [r for r in pq.read_table(tmp_path / "ref.parquet").to_pylist()
            if r["image_id"] == first["image_id"]][:2]
    parts = tmp_path / "s.parts"
    parts.mkdir()
    (parts / "settings.json").write_text(json.dumps(_settings(
        stop="interval", wave=2, width=0.04, confidence=0.95)))
    write_part(pa.Table.from_pylist(rows, schema=SCORES_SCHEMA), parts)
    with pytest.raises(EvoqError) as err:
        run_score(pool, spec("piqe", engine_args=CROPS), tmp_path / "s.parquet", **args)
    assert "holds 2 sample(s) of" in str(err.value)
    assert "ending where its --stop rule stops (at most 8)" in str(err.value)
    assert not (tmp_path / "s.parquet").exists()
