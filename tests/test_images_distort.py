"""Synthetic distortions: deterministic variants, and pairs whose known order is what it claims."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from evoq_data.cli import app
from evoq_data.core.errors import EvoqError
from evoq_data.images.distort import DISTORTIONS, LEVELS, distort_image, run_distort
from evoq_data.pairs.synthetic import synthetic_pairs

runner = CliRunner()


def _refs(folder: Path) -> Path:
    """Two small textured colour references (smooth gradients + a pattern)."""
    folder.mkdir(parents=True)
    yy, xx = np.mgrid[0:48, 0:64]
    for i in range(2):
        arr = np.stack([(xx * 4 + i * 30) % 256, (yy * 5) % 256,
                        ((xx + yy) * 3 + (xx // 8 % 2) * 90) % 256], axis=-1).astype("uint8")
        Image.fromarray(arr).save(folder / f"ref{i}.png")
    return folder


@pytest.fixture(scope="module")
def distorted(tmp_path_factory):
    root = tmp_path_factory.mktemp("distort")
    summary = run_distort(_refs(root / "refs"), root / "out", seed=3, quiet=True)
    return root, summary


def test_manifest_has_every_variant_with_its_file(distorted):
    root, summary = distorted
    table = pq.read_table(root / "out" / "distortions.parquet").to_pylist()
    assert summary["references"] == 2 and summary["dropped_duplicates"] == 0
    assert len(table) == 2 * (1 + len(DISTORTIONS) * len(LEVELS))
    kinds = Counter((r["distortion"], r["level"]) for r in table)
    assert kinds[("reference", 0)] == 2
    assert all(kinds[(k, lv)] == 2 for k in DISTORTIONS for lv in LEVELS)
    for r in table:  # the id is the content hash of the written file
        assert hashlib.sha256(Path(r["path"]).read_bytes()).hexdigest() == r["image_id"]
    refs = {r["image_id"] for r in table if r["level"] == 0}
    assert {r["reference_id"] for r in table} == refs


def test_variants_are_seeded_and_deterministic():
    im = Image.fromarray((np.arange(32 * 32 * 3) % 251).reshape(32, 32, 3).astype("uint8"))
    a = np.asarray(distort_image(im, "noise", 3, seed=1, reference_id="r"))
    b = np.asarray(distort_image(im, "noise", 3, seed=1, reference_id="r"))
    c = np.asarray(distort_image(im, "noise", 3, seed=2, reference_id="r"))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # stronger levels move further from the original, for every type
    base = np.asarray(im, float)
    for kind in DISTORTIONS:
        err = [np.abs(np.asarray(distort_image(im, kind, lv, seed=0), float) - base).mean()
               for lv in LEVELS]
        assert err == sorted(err) and err[0] > 0, (kind, err)
    with pytest.raises(EvoqError, match="unknown distortion"):
        distort_image(im, "sepia", 1)


def test_synthetic_pairs_known_order_is_the_lower_level(distorted):
    root, _ = distorted
    manifest = pq.read_table(root / "out" / "distortions.parquet")
    rows = {r["image_id"]: r for r in manifest.to_pylist()}
    pairs = synthetic_pairs(manifest).to_pylist()
    # per reference and type: reference + 5 levels -> C(6, 2) = 15 pairs; no cross-type pairs
    assert len(pairs) == 2 * len(DISTORTIONS) * 15
    wins: Counter = Counter()
    for p in pairs:
        a, b = rows[p["image_a_id"]], rows[p["image_b_id"]]
        assert a["reference_id"] == b["reference_id"] == p["reference_id"]
        assert len({a["distortion"], b["distortion"]} - {"reference"}) == 1
        better, worse = (a, b) if p["known_better_id"] == a["image_id"] else (b, a)
        assert p["known_better_id"] in (a["image_id"], b["image_id"])
        assert better["level"] < worse["level"]
        assert p["image_a_id"] < p["image_b_id"]
        wins[(p["reference_id"], worse["distortion"], better["level"])] += 1
    # a stronger distortion has a lower known rank: level L beats exactly 5 - L others
    for (_ref, _kind, level), n in wins.items():
        assert n == 5 - level


def test_pairs_synthetic_cli_subsamples_and_writes_manifest(distorted, tmp_path):
    root, _ = distorted
    out = tmp_path / "synth.parquet"
    res = runner.invoke(app, ["pairs", "--synthetic", str(root / "out"), "--out", str(out),
                              "--num-pairs", "20", "--seed", "1"])
    assert res.exit_code == 0, res.output
    table = pq.read_table(out)
    assert table.num_rows == 20
    assert table.column("known_better_id").null_count == 0
    assert (tmp_path / "synth.manifest.json").is_file()
    full = {p["pair_id"] for p in synthetic_pairs(
        pq.read_table(root / "out" / "distortions.parquet")).to_pylist()}
    assert set(table.column("pair_id").to_pylist()) <= full


def test_grey_photo_drops_saturation_duplicates(tmp_path):
    folder = tmp_path / "grey"
    folder.mkdir()
    arr = (np.random.default_rng(0).random((40, 40)) * 255).astype("uint8")
    Image.fromarray(arr).convert("RGB").save(folder / "g.png")
    Image.fromarray(arr[::-1]).convert("RGB").save(folder / "h.png")
    summary = run_distort(folder, tmp_path / "out", distortions=["saturation", "blur"],
                          quiet=True)
    assert summary["dropped_duplicates"] == 10  # desaturating grey changes nothing
    assert summary["variants"] == 10


@pytest.mark.parametrize(("args", "message"), [
    (["pairs", "--synthetic", "{tmp}/nowhere"], "no distortions.parquet in"),
    (["distort", "--images", "{tmp}/refs", "--out", "{tmp}/o", "--distortion", "sepia"],
     "unknown distortion(s) sepia"),
])
def test_bad_input_is_one_line(tmp_path, args, message):
    _refs(tmp_path / "refs")
    res = runner.invoke(app, [a.format(tmp=tmp_path) for a in args])
    assert isinstance(res.exception, EvoqError), res.output
    assert message in str(res.exception) and "\n" not in str(res.exception)
