"""evoq-data eval: metrics against scipy and an independent logistic fit, labels, bad input."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fixtures.images import make_images
from scipy.optimize import least_squares
from scipy.stats import pearsonr, spearmanr
from typer.testing import CliRunner

from evoq_data.cli import app
from evoq_data.core.errors import EvoqError
from evoq_data.core.schemas import SCORES_SCHEMA
from evoq_data.evaluate.labels import BENCHMARKS, benchmark_key
from evoq_data.evaluate.metrics import correlations, weighted_average

runner = CliRunner()


def _independent_logistic_plcc(x, y):
    """DeQA-Score's PLCC, computed here without evoq: own model, own solver."""
    def resid(b):
        return (b[0] - b[1]) / (1 + np.exp(-(x - b[2]) / b[3])) + b[1] - y

    b0 = [y.max(), y.min(), x.mean(), x.std() / 4]
    fit = least_squares(resid, b0, method="lm", max_nfev=20000)
    return pearsonr(resid(fit.x) + y, y).statistic, fit.x


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_agree_with_scipy_and_an_independent_fit(seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(1, 5, 200)
    y = 80 / (1 + np.exp(-(x - 3) / 0.6)) + 10 + rng.normal(0, 6, x.size)
    m = correlations(x, y)
    assert m["n"] == 200
    assert m["srcc"] == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
    assert m["plcc"] == pytest.approx(pearsonr(x, y).statistic, abs=1e-12)
    plcc_log, params = _independent_logistic_plcc(x, y)
    assert m["plcc_logistic"] == pytest.approx(plcc_log, abs=1e-5)
    assert m["logistic_params"] == pytest.approx(params, rel=1e-3)
    assert m["plcc_logistic"] > m["plcc"]  # the fit linearises a sigmoid relation


def test_pure_noise_gives_small_correlations_and_fewer_than_three_fails():
    rng = np.random.default_rng(5)
    m = correlations(rng.random(500), rng.random(500))
    assert abs(m["srcc"]) < 0.15 and abs(m["plcc"]) < 0.15
    with pytest.raises(EvoqError, match="at least 3 images, got 2"):
        correlations([1, 2], [2, 1])


def test_a_constant_side_gives_no_correlation_and_says_why():
    m = correlations([2.5] * 6, [1, 2, 3, 4, 5, 6])
    assert (m["srcc"], m["plcc"], m["plcc_logistic"]) == (None, None, None)
    assert m["undefined"] == ("every one of the 6 images got the same score (2.5), so SRCC "
                              "and PLCC are undefined")
    m = correlations([1, 2, 3, 4], [7.0] * 4)
    assert m["srcc"] is None and m["undefined"].startswith("all 4 labels are equal (7)")
    assert correlations([1, 2, 3], [1, 3, 2])["undefined"] is None


def test_eval_cli_names_a_model_that_scored_every_image_alike(tmp_path):
    paths = make_images(tmp_path / "imgs", 5, seed=2)
    ids = [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
    cols = {n: [] for n in SCORES_SCHEMA.names}
    for p, image_id in zip(paths, ids, strict=True):
        row = {"image_id": image_id, "image_path": str(p), "sample_index": 0, "score": 1.0,
               "parse_status": "ok"}
        for n in SCORES_SCHEMA.names:
            cols[n].append(row.get(n))
    pq.write_table(pa.table(cols, schema=SCORES_SCHEMA), tmp_path / "scores.parquet")
    pq.write_table(pa.table({"image_id": ids, "mos": [1.0, 2, 3, 4, 5]}), tmp_path / "l.parquet")
    res = runner.invoke(app, ["eval", "--scores", str(tmp_path / "scores.parquet"),
                              "--labels", f"mine={tmp_path / 'l.parquet'}",
                              "--out", str(tmp_path / "eval")])
    assert res.exit_code == 0, res.output
    md = (tmp_path / "eval" / "metrics.md").read_text()
    assert "| mine | 5 | — | — | — |" in md
    assert ("- warning: mine: every one of the 5 images got the same score (1), so SRCC and "
            "PLCC are undefined") in md
    doc = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert doc["benchmarks"][0]["undefined"].startswith("every one of the 5 images")
    assert doc["wavg"]["srcc"] is None


def test_weighted_average_weights_by_size():
    res = [{"n": 100, "srcc": 0.5, "plcc": 0.6, "plcc_logistic": None},
           {"n": 300, "srcc": 0.9, "plcc": 0.8, "plcc_logistic": 0.7}]
    w = weighted_average(res)
    assert w == {"n": 400, "srcc": pytest.approx(0.8), "plcc": pytest.approx(0.75),
                 "plcc_logistic": pytest.approx(0.7)}


@pytest.mark.parametrize(("name", "key"), [("KonIQ", "koniq"), ("koniq-10k", "koniq"),
                                           ("LIVE-Challenge", "livew"), ("CSIQ", "csiq"),
                                           ("TID2013", "tid2013"), ("mine", None)])
def test_benchmark_registry_names(name, key):
    assert benchmark_key(name) == key
    assert sum(size for _, size in BENCHMARKS.values()) == 2000 * 3 + 5000 + 1162 + 2982 + 3000 + 866


@pytest.fixture
def scored(tmp_path):
    """12 images, a scores.parquet with 2 samples each (one invalid for image 0)."""
    paths = make_images(tmp_path / "imgs", 12, seed=4)
    ids = [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
    rng = np.random.default_rng(0)
    truth = rng.uniform(1, 5, 12)
    cols = {n: [] for n in SCORES_SCHEMA.names}
    for i, (p, image_id) in enumerate(zip(paths, ids, strict=True)):
        for k in range(2):
            score = None if (i == 0 and k == 0) else float(truth[i] + (0.1 if k else -0.1))
            row = {"image_id": image_id, "image_path": str(p), "sample_index": k,
                   "score": score, "parse_status": "ok" if score else "no_box"}
            for n in SCORES_SCHEMA.names:
                cols[n].append(row.get(n))
    pq.write_table(pa.table(cols, schema=SCORES_SCHEMA), tmp_path / "scores.parquet")
    return tmp_path, paths, ids, truth


def test_eval_cli_two_benchmarks_from_csv_parquet_and_dataset(scored):
    import datasets

    tmp, paths, ids, truth = scored
    mos = 20 * truth + np.random.default_rng(1).normal(0, 8, 12)
    # KonIQ by relative paths in a CSV (the first 8 images)
    lines = ["path,MOS"] + [f"{p.relative_to(tmp)},{m}" for p, m in zip(paths[:8], mos[:8], strict=True)]
    (tmp / "koniq.csv").write_text("\n".join(lines) + "\n")
    # a custom set by image id in Parquet (images 4..11)
    pq.write_table(pa.table({"image_id": ids[4:], "mos": mos[4:]}), tmp / "mine.parquet")
    out = tmp / "eval"
    res = runner.invoke(app, ["eval", "--scores", str(tmp / "scores.parquet"),
                              "--labels", f"KonIQ={tmp / 'koniq.csv'}",
                              "--labels", f"mine={tmp / 'mine.parquet'}", "--out", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "metrics.json").read_text())
    k, m = doc["benchmarks"]
    assert k["matched"] == 8 and m["matched"] == 8
    assert k["srcc"] == pytest.approx(spearmanr(truth[:8], mos[:8]).statistic)
    assert m["plcc"] == pytest.approx(pearsonr(truth[4:], mos[4:]).statistic)
    assert doc["wavg"]["srcc"] == pytest.approx((k["srcc"] + m["srcc"]) / 2)
    assert "weighted by test-set size" in res.output
    assert "KonIQ's test split has 2000" in k["warnings"][0] and not m["warnings"]
    assert (out / "scatter.png").stat().st_size > 1000
    assert "| KonIQ | 8 |" in (out / "metrics.md").read_text()
    # the same labels as a HF dataset with an image column
    ds = datasets.Dataset.from_dict({"image": [str(p) for p in paths[:8]],
                                     "mos": list(mos[:8])}).cast_column("image", datasets.Image())
    ds.save_to_disk(str(tmp / "ds"))
    res = runner.invoke(app, ["eval", "--scores", str(tmp / "scores.parquet"),
                              "--labels", f"hf={tmp / 'ds'}", "--out", str(tmp / "e2")])
    assert res.exit_code == 0, res.output
    hf = json.loads((tmp / "e2" / "metrics.json").read_text())["benchmarks"][0]
    assert hf["srcc"] == pytest.approx(k["srcc"]) and hf["plcc"] == pytest.approx(k["plcc"])
    res = runner.invoke(app, ["eval", "--scores", str(tmp / "scores.parquet"), "--labels",
                              f"hf={tmp / 'ds'}", "--image-column", "mos", "--mos-column",
                              "mos", "--out", str(tmp / "e3")])
    assert isinstance(res.exception, EvoqError), res.output
    assert "column 'mos' of labels dataset" in str(res.exception)


def _fail(args):
    res = runner.invoke(app, args)
    assert isinstance(res.exception, EvoqError), res.output
    msg = str(res.exception)
    assert "\n" not in msg
    return msg


def test_bad_labels_are_one_line_errors(scored):
    tmp, paths, ids, _ = scored
    base = ["eval", "--scores", str(tmp / "scores.parquet"), "--out", str(tmp / "e")]
    (tmp / "missing.csv").write_text("path,mos\nimgs/nope.png,3\nimgs/img000.png,2\n"
                                     "gone.jpg,1\n")
    msg = _fail([*base, "--labels", str(tmp / "missing.csv")])
    assert "2 image path(s)" in msg and "nope.png" in msg and "gone.jpg" in msg
    (tmp / "nomos.csv").write_text("path,score\nimgs/img000.png,3\n")
    assert "no 'mos' column" in _fail([*base, "--labels", str(tmp / "nomos.csv")])
    pq.write_table(pa.table({"image_id": ids[:2] + ["f" * 64], "mos": [1.0, 2.0, 3.0]}),
                   tmp / "few.parquet")
    assert "only 2 image(s)" in _fail([*base, "--labels", str(tmp / "few.parquet")])
    assert "labels file not found" in _fail([*base, "--labels", str(tmp / "nope.csv")])
    assert "exactly one of --scores" in _fail(["eval", "--labels", "x.csv"])


def test_score_then_eval_piqe_on_known_blur_levels(tmp_path):
    """score --engine piqe, then eval against MOS = 5 - blur level: a real judge, real files."""
    pytest.importorskip("pypiqe")
    from PIL import Image
    from skimage import data

    from evoq_data.images.distort import run_distort

    refs = tmp_path / "refs"
    refs.mkdir()
    for name in ("astronaut", "coffee"):
        Image.fromarray(getattr(data, name)()).resize((192, 192)).save(refs / f"{name}.png")
    run_distort(refs, tmp_path / "d", distortions=["blur"], quiet=True)
    man = pq.read_table(tmp_path / "d" / "distortions.parquet")
    pq.write_table(pa.table({"path": man.column("path"),
                             "mos": pa.compute.subtract(5, man.column("level"))}),
                   tmp_path / "blur.parquet")
    res = runner.invoke(app, ["score", "--images", str(tmp_path / "d"), "--engine", "piqe",
                              "--samples", "1", "--out", str(tmp_path / "s.parquet"), "-q"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["eval", "--scores", str(tmp_path / "s.parquet"), "--labels",
                              f"blur={tmp_path / 'blur.parquet'}", "--out", str(tmp_path / "e")])
    assert res.exit_code == 0, res.output
    [bench] = json.loads((tmp_path / "e" / "metrics.json").read_text())["benchmarks"]
    assert bench["matched"] == 12
    assert bench["srcc"] > 0.8  # PIQE ranks blur levels almost perfectly


def test_duplicate_label_rows_with_other_mos_are_refused(scored):
    """Before: the last row won silently (an SRCC of 1.000 became 0.333 in the report)."""
    from fixtures.cli import assert_user_error

    tmp, paths, ids, truth = scored
    order = np.argsort(truth)
    rel = [paths[i].relative_to(tmp) for i in order[:4]]
    lines = ["path,mos"] + [f"{p},{k + 1}" for k, p in enumerate(rel)] + [f"{rel[0]},9.5"]
    (tmp / "dup.csv").write_text("\n".join(lines) + "\n")
    res = runner.invoke(app, ["eval", "--scores", str(tmp / "scores.parquet"), "--labels",
                              f"mine={tmp / 'dup.csv'}", "--out", str(tmp / "e")])
    assert_user_error(res, str(tmp / "dup.csv"), f"path {rel[0]} twice", "1 (row 1)",
                      "9.5 (row 5)")
    # the same image bytes under two names, with two MOS values: refused too
    twin = tmp / "imgs" / "twin.png"
    twin.write_bytes(paths[order[0]].read_bytes())
    (tmp / "twin.csv").write_text("\n".join(lines[:5] + ["imgs/twin.png,3.5"]) + "\n")
    res = runner.invoke(app, ["eval", "--scores", str(tmp / "scores.parquet"), "--labels",
                              str(tmp / "twin.csv"), "--out", str(tmp / "e")])
    assert_user_error(res, f"path {rel[0]} and path imgs/twin.png (the same image bytes)",
                      "row 5")


def test_identical_duplicates_are_merged_and_empty_mos_rows_reported(scored):
    tmp, paths, ids, truth = scored
    rel = [p.relative_to(tmp) for p in paths]
    lines = ["path,mos"] + [f"{p},{t:.6f}" for p, t in zip(rel, truth, strict=True)]
    lines += [f"{rel[3]},{truth[3]:.6f}"]  # row 13: the same MOS again: merged
    lines[2] = f"{rel[1]},"          # row 2: empty MOS
    lines[6] = f"{rel[5]},NaN"       # row 6: NaN
    (tmp / "holes.csv").write_text("\n".join(lines) + "\n")
    res = runner.invoke(app, ["eval", "--scores", str(tmp / "scores.parquet"), "--labels",
                              f"mine={tmp / 'holes.csv'}", "--out", str(tmp / "e")])
    assert res.exit_code == 0, res.output
    [bench] = json.loads((tmp / "e" / "metrics.json").read_text())["benchmarks"]
    assert bench["dropped_label_rows"] == {"count": 2, "rows": [2, 6]}
    assert bench["merged_duplicate_rows"] == 1
    assert bench["matched"] == 10 and bench["label_rows"] == 13
    keep = [i for i in range(12) if i not in (1, 5)]
    assert bench["srcc"] == pytest.approx(spearmanr([truth[i] for i in keep],
                                                    [round(truth[i], 6) for i in keep]).statistic)
    assert bench["warnings"] == [
        "mine: 2 label row(s) without a usable MOS (empty or not a finite number) were left "
        "out: row(s) 2, 6",
        "mine: 1 label row(s) repeat an image with the same MOS and were merged"]
    md = (tmp / "e" / "metrics.md").read_text()
    assert "| label rows left out |" in md and "| 2 |" in md.splitlines()[2]
    assert "- warning: mine: 2 label row(s) without a usable MOS" in md


def test_semicolon_csv_is_read_and_decimal_commas_get_a_hint(scored):
    tmp, paths, ids, truth = scored
    rel = [p.relative_to(tmp) for p in paths]
    (tmp / "semi.csv").write_text("path;MOS\n" + "".join(
        f"{p};{t:.4f}\n" for p, t in zip(rel, truth, strict=True)))
    res = runner.invoke(app, ["eval", "--scores", str(tmp / "scores.parquet"), "--labels",
                              f"semi={tmp / 'semi.csv'}", "--out", str(tmp / "e")])
    assert res.exit_code == 0, res.output
    [bench] = json.loads((tmp / "e" / "metrics.json").read_text())["benchmarks"]
    assert bench["matched"] == 12
    (tmp / "comma.csv").write_text("path;MOS\n" + "".join(
        f"{p};{str(round(t, 4)).replace('.', ',')}\n" for p, t in zip(rel, truth, strict=True)))
    msg = _fail(["eval", "--scores", str(tmp / "scores.parquet"), "--labels",
                 str(tmp / "comma.csv"), "--out", str(tmp / "e")])
    assert "looks ;-delimited" in msg and "'MOS' is not numeric" in msg
