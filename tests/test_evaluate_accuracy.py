"""eval --prefs: pseudo-label accuracy against MOS, synthetic pairs and distort folders."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from evoq_data.cli import app
from evoq_data.core.errors import EvoqError
from evoq_data.core.schemas import PAIRS_SCHEMA
from evoq_data.evaluate.accuracy import bucket_of
from evoq_data.images.distort import MANIFEST_SCHEMA

runner = CliRunner()

# (a, b, p_star, agreement): a..f are image ids
PREFS = [
    ("a", "b", 1.0, 1.0),     # a better: right vs truth a
    ("a", "c", 0.0, 0.7),     # c better: wrong vs truth a
    ("b", "c", 1.0, 0.95),    # b better: right vs truth b
    ("c", "d", 0.5, 0.5),     # tie: undecided
    ("d", "e", None, None),   # no valid vote: undecided
    ("e", "f", 1.0, 0.55),    # e better: right vs truth e
    ("a", "zz", 1.0, 1.0),    # zz has no label: no truth
]
MOS = {"a": 4.0, "b": 3.0, "c": 2.0, "d": 2.0, "e": 3.5, "f": 1.0}


def _write_prefs(folder):
    folder.mkdir()
    rows = [{"pair_id": f"p{i}", "image_a_id": a, "image_b_id": b, "p_star": p,
             "agreement": g} for i, (a, b, p, g) in enumerate(PREFS)]
    pq.write_table(pa.Table.from_pylist(rows), folder / "preferences.parquet")
    return folder


def test_accuracy_against_mos_counts_exactly(tmp_path):
    prefs = _write_prefs(tmp_path / "prefs")
    pq.write_table(pa.table({"image_id": list(MOS), "mos": list(MOS.values())}),
                   tmp_path / "mos.parquet")
    res = runner.invoke(app, ["eval", "--prefs", str(prefs), "--labels",
                              str(tmp_path / "mos.parquet"), "--out", str(tmp_path / "e")])
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "e" / "accuracy.json").read_text())
    # truth: (a,b) a; (a,c) a; (b,c) b; (c,d) MOS tie; (d,e) e; (e,f) e; (a,zz) none
    assert {k: doc[k] for k in ("pairs", "with_truth", "no_truth", "truth_ties", "undecided",
                                "decisive", "correct")} == {
        "pairs": 7, "with_truth": 5, "no_truth": 1, "truth_ties": 1, "undecided": 1,
        "decisive": 4, "correct": 3}
    assert doc["accuracy"] == 0.75 and doc["coverage"] == pytest.approx(4 / 5)
    assert doc["by_agreement"] == {
        "[0.5, 0.6)": {"decisive": 1, "correct": 1, "accuracy": 1.0},
        "[0.7, 0.8)": {"decisive": 1, "correct": 0, "accuracy": 0.0},
        "[0.9, 1.0)": {"decisive": 1, "correct": 1, "accuracy": 1.0},
        "1.0 (unanimous)": {"decisive": 1, "correct": 1, "accuracy": 1.0}}
    assert "**75.0%** (3/4 decisive pairs" in res.output
    assert (tmp_path / "e" / "accuracy.png").stat().st_size > 1000


def test_accuracy_against_synthetic_pairs_and_distort_manifest(tmp_path):
    prefs = _write_prefs(tmp_path / "prefs")
    pairs = [{"pair_id": "x", "image_a_id": "a", "image_a_path": "", "image_b_id": "c",
              "image_b_path": "", "reference_id": "a", "known_better_id": "c"},
             {"pair_id": "y", "image_a_id": "b", "image_a_path": "", "image_b_id": "c",
              "image_b_path": "", "reference_id": "a", "known_better_id": "b"}]
    pq.write_table(pa.Table.from_pylist(pairs, schema=PAIRS_SCHEMA), tmp_path / "pairs.parquet")
    res = runner.invoke(app, ["eval", "--prefs", str(prefs), "--labels",
                              str(tmp_path / "pairs.parquet"), "--out", str(tmp_path / "e")])
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "e" / "accuracy.json").read_text())
    assert (doc["with_truth"], doc["decisive"], doc["correct"]) == (2, 2, 2)
    # distort manifest: a reference, b blur-1, c blur-3, e noise-2 (b vs e: no known order)
    rows = [("a", "reference", 0), ("b", "blur", 1), ("c", "blur", 3), ("e", "noise", 2),
            ("f", "noise", 4)]
    man = [{"image_id": i, "path": f"/{i}.png", "reference_id": "a", "reference_path": "/a",
            "distortion": d, "level": lv, "parameter": None, "seed": 0} for i, d, lv in rows]
    dist = tmp_path / "distorted"
    dist.mkdir()
    pq.write_table(pa.Table.from_pylist(man, schema=MANIFEST_SCHEMA),
                   dist / "distortions.parquet")
    res = runner.invoke(app, ["eval", "--prefs", str(prefs), "--labels", str(dist),
                              "--out", str(tmp_path / "e2")])
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "e2" / "accuracy.json").read_text())
    # (a,b) right, (a,c) wrong, (b,c) right [blur]; (e,f) right [noise]; others unknown
    assert (doc["with_truth"], doc["decisive"], doc["correct"]) == (4, 4, 3)
    assert doc["by_group"] == {"blur": {"decisive": 3, "correct": 2, "accuracy": 2 / 3},
                               "noise": {"decisive": 1, "correct": 1, "accuracy": 1.0}}


@pytest.mark.parametrize(("value", "bucket"), [(0.5, "[0.5, 0.6)"), (0.6, "[0.6, 0.7)"),
                                               (0.999, "[0.9, 1.0)"), (1.0, "1.0 (unanimous)"),
                                               (None, None)])
def test_buckets(value, bucket):
    assert bucket_of(value) == bucket


def test_prefs_errors(tmp_path):
    prefs = _write_prefs(tmp_path / "prefs")
    pq.write_table(pa.table({"image_id": ["q", "r", "s"], "mos": [1.0, 2.0, 3.0]}),
                   tmp_path / "other.parquet")
    for args, message in (
        (["--prefs", str(tmp_path / "none"), "--labels", "x.csv"], "no preferences.parquet"),
        (["--prefs", str(prefs), "--labels", str(tmp_path / "other.parquet")],
         "has a known order"),
    ):
        res = runner.invoke(app, ["eval", *args, "--out", str(tmp_path / "e")])
        assert isinstance(res.exception, EvoqError), res.output
        assert message in str(res.exception)
