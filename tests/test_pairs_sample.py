"""Image pools and pair sampling: ids, dedupe, skipped files, determinism, bad input."""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from fixtures.cli import assert_user_error
from fixtures.images import make_images
from typer.testing import CliRunner

from evoq_data.cli import app
from evoq_data.core.errors import EvoqError
from evoq_data.images.pool import load_pool
from evoq_data.pairs.sample import make_pair_id, run_pairs, sample_pairs, unrank_pairs

runner = CliRunner()


def _cli(*args):
    return runner.invoke(app, list(args))




@pytest.mark.parametrize("m", [2, 3, 7, 50, 401])
def test_unrank_pairs_matches_lexicographic_enumeration(m):
    expected = list(itertools.combinations(range(m), 2))
    i, j = unrank_pairs(np.arange(len(expected)), m)
    assert list(zip(i.tolist(), j.tolist(), strict=True)) == expected


def test_sample_pairs_distinct_deterministic_and_exhaustive():
    ids = [f"{k:02d}" for k in range(10)]
    a = sample_pairs(ids, 45, seed=3)
    assert sorted(a) == list(itertools.combinations(range(10), 2))  # all 45, each once
    assert sample_pairs(ids, 20, seed=3) == sample_pairs(ids, 20, seed=3)
    assert sample_pairs(ids, 20, seed=3) != sample_pairs(ids, 20, seed=4)
    with pytest.raises(EvoqError, match="only 45 distinct pairs"):
        sample_pairs(ids, 46, seed=0)


def test_pair_id_is_unordered():
    assert make_pair_id("a", "b") == make_pair_id("b", "a") != make_pair_id("a", "c")


def test_pool_ids_dedupe_and_skips(tmp_path):
    pool = tmp_path / "pool"
    paths = make_images(pool, 4)
    shutil.copy(paths[0], pool / "copy_of_first.png")  # identical bytes: one image
    (pool / "notes.txt").write_text("not an image, wrong extension: ignored")
    (pool / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    truncated = pool / "truncated.jpg"
    truncated.write_bytes(paths[1].read_bytes()[:200])
    images, report = load_pool(pool, quiet=True)
    assert [im.image_id for im in images] == sorted(
        hashlib.sha256(p.read_bytes()).hexdigest() for p in paths)
    assert report.duplicates == 1
    assert report.files_seen == 7
    assert sorted(s["path"] for s in report.skipped) == sorted(
        [str(pool / "broken.png"), str(truncated)])


def test_pool_guards_against_decompression_bombs(tmp_path):
    from PIL import Image

    pool = tmp_path / "pool"
    make_images(pool, 3)
    Image.new("L", (3000, 3000)).save(pool / "huge.png")  # 9 MP, compresses to a few KB
    images, report = load_pool(pool, max_pixels=4_000_000, quiet=True)
    assert len(images) == 3
    assert report.skipped[0]["path"].endswith("huge.png")
    assert "too large" in report.skipped[0]["reason"]


def test_pairs_command_writes_table_and_report(image_pool, tmp_path):
    (image_pool / "bad.webp").write_bytes(b"RIFF0000WEBPjunk")
    out = tmp_path / "pairs.parquet"
    result = _cli("pairs", "--images", str(image_pool), "--num-pairs", "10", "--seed", "7",
                  "--out", str(out), "-q")
    assert result.exit_code == 0, result.output
    table = pq.read_table(out).to_pylist()
    assert len(table) == 10
    keys = {(r["image_a_id"], r["image_b_id"]) for r in table}
    assert len(keys) == 10 and all(a < b for a, b in keys)
    for r in table:
        assert r["pair_id"] == make_pair_id(r["image_a_id"], r["image_b_id"])
        assert hashlib.sha256(open(r["image_a_path"], "rb").read()).hexdigest() == r["image_a_id"]
    manifest = json.loads((tmp_path / "pairs.manifest.json").read_text())
    assert manifest["pool"]["images"] == 6
    assert manifest["pool"]["skipped"][0]["path"].endswith("bad.webp")
    assert manifest["seed"] == 7 and manifest["possible_pairs"] == 15
    # same seed, same pairs; the stderr report names the skipped file
    out2 = tmp_path / "again.parquet"
    _cli("pairs", "--images", str(image_pool), "--num-pairs", "10", "--seed", "7",
         "--out", str(out2), "-q")
    assert pq.read_table(out2).column("pair_id").to_pylist() == [r["pair_id"] for r in table]


def test_pairs_from_a_hf_dataset_folder(tmp_path):
    import datasets

    paths = make_images(tmp_path / "src", 4)
    ds = datasets.Dataset.from_dict({"picture": [str(p) for p in paths]}).cast_column(
        "picture", datasets.Image())
    ds.save_to_disk(str(tmp_path / "ds"))
    out = tmp_path / "pairs.parquet"
    summary = run_pairs(str(tmp_path / "ds"), 6, 0, out, image_column="picture", quiet=True)
    assert summary["images"] == 4
    rows = pq.read_table(out).to_pylist()
    expected_ids = {hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}
    assert {r["image_a_id"] for r in rows} | {r["image_b_id"] for r in rows} == expected_ids
    for r in rows:  # materialised files are named by their content hash
        assert hashlib.sha256(open(r["image_b_path"], "rb").read()).hexdigest() == r["image_b_id"]
    with pytest.raises(EvoqError, match="no column 'image'"):
        run_pairs(str(tmp_path / "ds"), 2, 0, tmp_path / "x.parquet", quiet=True)
    ds.add_column("mos", [1, 2, 3, 4]).save_to_disk(str(tmp_path / "ds2"))
    with pytest.raises(EvoqError, match="column 'mos' of dataset .* does not hold images"):
        run_pairs(str(tmp_path / "ds2"), 2, 0, tmp_path / "x.parquet", image_column="mos",
                  quiet=True)


def test_pairs_bad_input(tmp_path, image_pool):
    assert_user_error(_cli("pairs", "--images", str(tmp_path / "missing"), "--num-pairs", "1",
                           "--out", str(tmp_path / "p.parquet")), "not found")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_user_error(_cli("pairs", "--images", str(empty), "--num-pairs", "1",
                           "--out", str(tmp_path / "p.parquet")), "no images")
    assert_user_error(_cli("pairs", "--images", str(tmp_path / "missing"), "--num-pairs", "0",
                           "--out", str(tmp_path / "p.parquet")), "at least 1")  # checked first
    assert_user_error(_cli("pairs", "--images", str(image_pool), "--num-pairs", "16",
                           "--out", str(tmp_path / "p.parquet"), "-q"),
                      "16 pairs", "only 15")
    # an output that cannot be written: a folder in the way, a parent that is a file
    taken = tmp_path / "taken.parquet"
    taken.mkdir()
    assert_user_error(_cli("pairs", "--images", str(image_pool), "--num-pairs", "2",
                           "--out", str(taken), "-q"), f"cannot write {taken}")
    assert not list(tmp_path.glob(".taken.parquet.*.tmp"))
    assert_user_error(_cli("pairs", "--images", str(image_pool), "--num-pairs", "2",
                           "--out", str(image_pool / "img000.png" / "p.parquet"), "-q"),
                      "cannot write")



# --- the one pairs reader (vote, aggregate) ---------------------------------------------------

def _self_pair_file(src, out):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = pq.read_table(src).to_pylist()
    rows[1]["image_b_id"], rows[1]["image_b_path"] = rows[1]["image_a_id"], rows[1]["image_a_path"]
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(src)), out)
    return out, rows[1]


def test_a_self_pair_is_refused_by_vote_naming_the_row(tmp_path, image_pool):
    pairs = tmp_path / "pairs.parquet"
    assert _cli("pairs", "--images", str(image_pool), "--num-pairs", "3", "--seed", "1",
                "--out", str(pairs), "-q").exit_code == 0
    bad, row = _self_pair_file(pairs, tmp_path / "self.parquet")
    result = _cli("vote", "--pairs", str(bad), "--engine", "piqe", "-k", "2",
                  "--out", str(tmp_path / "votes"), "-q")
    assert_user_error(result, f"pairs file {bad} row 1 (pair {row['pair_id']}) pairs image "
                              f"{row['image_a_id']} with itself (1 such row(s))")
    assert not (tmp_path / "votes").exists()


def test_a_self_pair_is_refused_by_aggregate(tmp_path):
    from test_aggregate import write_votes

    from evoq_data.aggregate.run import run_aggregate
    from evoq_data.core.errors import EvoqError

    votes = write_votes(tmp_path / "votes", [[]], pairs=[("p1", "A", "B"), ("p2", "C", "C")])
    with pytest.raises(EvoqError, match=r"votes-pairs\.parquet row 1 \(pair p2\) pairs image C "
                                        "with itself"):
        run_aggregate(votes, tmp_path / "prefs", quiet=True)


@pytest.mark.parametrize("column, row, why", [
    ("image_a_id", 2, "row 2: image_a_id is empty"),
    ("pair_id", 0, "row 0: pair_id is empty"),
])
def test_pairs_reader_refuses_empty_ids(tmp_path, column, row, why):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from evoq_data.core.errors import EvoqError
    from evoq_data.pairs.read import read_pairs

    rows = [{"pair_id": f"p{i}", "image_a_id": f"a{i}", "image_a_path": "x",
             "image_b_id": f"b{i}", "image_b_path": "y"} for i in range(3)]
    rows[row][column] = None
    path = tmp_path / "p.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    with pytest.raises(EvoqError, match=why):
        read_pairs(path)
