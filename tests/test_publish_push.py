"""`evoq-data push --local-dir`: the dataset repository folder, its card, versions and bad input."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from fixtures.cli import assert_user_error as assert_error
from fixtures.push import PAIRS, make_prefs_dir
from typer.testing import CliRunner

from evoq_data.cli import app
from evoq_data.publish.push import run_push

runner = CliRunner()


def push_cli(*args: str):
    return runner.invoke(app, ["push", *args])




def load_rows(folder: Path, config: str) -> list[dict]:
    """Rows as `datasets.load_dataset` gives them, with image bytes instead of PIL images."""
    import datasets

    ds = datasets.load_dataset(str(folder), config, split="train")
    for name, feature in ds.features.items():
        if isinstance(feature, datasets.Image):
            ds = ds.cast_column(name, datasets.Image(decode=False))
    return ds.to_list()


def test_local_dir_loads_exact_rows_images_and_card(prefs, tmp_path):
    out = tmp_path / "repo"
    result = push_cli("--prefs", str(prefs), "--repo-id", "me/evoq-small", "--version", "v1",
                      "--local-dir", str(out), "--include-votes", "--quiet")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["status"] == "written"
    assert summary["rows"] == {"preferences": 5, "images": 5, "votes": 20}

    pool = prefs.parent / "pool"  # the folder given to `pairs`: paths are published below it
    expected = pq.read_table(prefs / "preferences.parquet").to_pylist()
    for row in expected:
        for side in "ab":
            row[f"image_{side}_path"] = Path(row[f"image_{side}_path"]).relative_to(pool).as_posix()
    rows = load_rows(out, "preferences")
    assert [{k: r[k] for k in expected[0]} for r in rows] == expected
    assert {r["image_b_path"] for r in rows} >= {"sub/img001.jpg", "img002.png"}
    for row in rows:  # the embedded bytes are exactly the voted files (id = sha256 of bytes)
        for side in "ab":
            image = row[f"image_{side}"]
            assert hashlib.sha256(image["bytes"]).hexdigest() == row[f"image_{side}_id"]
            assert image["bytes"] == (pool / row[f"image_{side}_path"]).read_bytes()
    images = load_rows(out, "images")
    assert [r["image_id"] for r in images] == \
        pq.read_table(prefs / "images.parquet").column("image_id").to_pylist()
    assert all(hashlib.sha256(r["image"]["bytes"]).hexdigest() == r["image_id"] for r in images)
    votes = load_rows(out, "votes")
    assert len(votes) == 20
    assert sum(v["answer"] is None for v in votes) == sum(p[4] for p in PAIRS)
    assert {v["raw_text"] for v in votes if v["answer"] is None} == {"no idea"}

    card = (out / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["license"] == "apache-2.0"
    assert {"image-quality-assessment", "pseudo-labels"} <= set(meta["tags"])
    assert meta["size_categories"] == ["n<1K"]
    assert [c["config_name"] for c in meta["configs"]] == ["preferences", "images", "votes"]
    manifest = json.loads((prefs / "manifest.json").read_text())
    for needle in (manifest["votes"]["prompt_template"], "arXiv", "2509.25787",
                   "assets/agreement_hist.png", "assets/position_bias.png",
                   summary["content_hash"], "| votes per pair (K) | 4 |", "| vote seed | 7 |",
                   "count_pair_votes.sql", "(5 images)", "Position bias"):
        assert needle in card, needle
    evoq = json.loads((out / "evoq.json").read_text())
    assert evoq["content_hash"] == summary["content_hash"]
    label = summary["paths"]["relative_to"]
    assert summary["paths"] == evoq["paths"] == {"local": False, "relative_to": label}
    assert label.startswith("pool-") and f"`{label}`" in card
    # the manifests are published with every local path replaced, and nothing else changed
    assert evoq["aggregate"]["votes_dir"] == "votes"
    assert evoq["aggregate"]["votes"]["pairs_file"] == "pairs.parquet"
    assert evoq["pairs"]["source"] == label
    assert {k: v for k, v in evoq["aggregate"].items() if k not in ("votes_dir", "votes")} == \
        {k: v for k, v in manifest.items() if k not in ("votes_dir", "votes")}
    assert {k: v for k, v in evoq["aggregate"]["votes"].items() if k != "pairs_file"} == \
        {k: v for k, v in manifest["votes"].items() if k != "pairs_file"}
    for rel, digest in evoq["files"].items():
        assert hashlib.sha256((out / rel).read_bytes()).hexdigest() == digest


def test_same_content_is_a_noop_other_content_same_version_refused(prefs, tmp_path):
    out = tmp_path / "repo"
    first = run_push(prefs, "me/d", "v1", local_dir=out, quiet=True)
    mtime = (out / "evoq.json").stat().st_mtime_ns
    again = run_push(prefs, "me/d", "v1", local_dir=out, quiet=True)
    assert again["status"] == "unchanged" and again["content_hash"] == first["content_hash"]
    assert (out / "evoq.json").stat().st_mtime_ns == mtime

    other = make_prefs_dir(tmp_path / "run2", seed=1)
    result = push_cli("--prefs", str(other), "--repo-id", "me/d", "--version", "v1",
                      "--local-dir", str(out))
    assert_error(result, "already holds version v1", "new --version")
    assert json.loads((out / "evoq.json").read_text())["content_hash"] == first["content_hash"]
    # a new version replaces the folder's content
    v2 = run_push(other, "me/d", "v2", local_dir=out, quiet=True)
    assert v2["status"] == "written" and v2["content_hash"] != first["content_hash"]
    assert json.loads((out / "evoq.json").read_text())["version"] == "v2"


def test_no_embed_images_keeps_paths_only(prefs, tmp_path):
    out = tmp_path / "repo"
    run_push(prefs, "me/d", "v1", local_dir=out, embed_images=False, quiet=True)
    rows = load_rows(out, "preferences")
    assert "image_a" not in rows[0] and rows[0]["image_a_path"].endswith("img000.png")
    assert "image" not in load_rows(out, "images")[0]


def test_content_hash_ignores_parquet_encoding_and_card(prefs, tmp_path):
    a = run_push(prefs, "me/d", "v1", local_dir=tmp_path / "a", quiet=True)
    b = run_push(prefs, "other/name", "v9", local_dir=tmp_path / "b", license="mit", quiet=True)
    assert a["content_hash"] == b["content_hash"]


def test_missing_preferences(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_error(push_cli("--prefs", str(tmp_path / "empty"), "--repo-id", "me/d",
                          "--version", "v1", "--local-dir", str(tmp_path / "o")),
                 "has no preferences.parquet")


@pytest.mark.parametrize("repo_id", ["nope", "a/b/c", "me/../x", "-me/x", "me/x.git", "me/x y"])
def test_malformed_repo_id(prefs, tmp_path, repo_id):
    assert_error(push_cli("--prefs", str(prefs), "--repo-id", repo_id, "--version", "v1",
                          "--local-dir", str(tmp_path / "o")), "malformed repo id")
    assert not (tmp_path / "o").exists()


def test_malformed_version(prefs, tmp_path):
    assert_error(push_cli("--prefs", str(prefs), "--repo-id", "me/d", "--version", "main",
                          "--local-dir", str(tmp_path / "o")), "malformed version")


def test_missing_token_for_a_real_endpoint(prefs, monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    assert_error(push_cli("--prefs", str(prefs), "--repo-id", "me/d", "--version", "v1",
                          "--endpoint", "https://hub.example.org"),
                 "no Hugging Face token for https://hub.example.org", "HF_TOKEN")


def test_missing_images_are_named_and_nothing_is_written(prefs, tmp_path):
    gone = [Path(p) for p in pq.read_table(prefs / "images.parquet")
            .column("image_path").to_pylist()[:2]]
    for path in gone:
        path.unlink()
    out = tmp_path / "o"
    result = push_cli("--prefs", str(prefs), "--repo-id", "me/d", "--version", "v1",
                      "--local-dir", str(out))
    assert_error(result, "2 image(s) missing from disk", str(gone[0]), str(gone[1]))
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".evoq-push-")]


def test_listed_file_that_is_not_an_image_is_refused(tmp_path):
    prefs = make_prefs_dir(tmp_path / "run")
    table = pq.read_table(prefs / "preferences.parquet").to_pylist()
    fake = tmp_path / "run" / "notes.png"
    fake.write_bytes(b"secret notes, not an image")
    table[0]["image_a_path"] = str(fake)
    table[0]["image_a_id"] = hashlib.sha256(fake.read_bytes()).hexdigest()
    schema = pq.read_schema(prefs / "preferences.parquet")
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(table, schema=schema), prefs / "preferences.parquet")
    result = push_cli("--prefs", str(prefs), "--repo-id", "me/d", "--version", "v1",
                      "--local-dir", str(tmp_path / "o"))
    assert_error(result, "not usable images", str(fake), "unreadable")
    assert not (tmp_path / "o").exists()


def test_image_changed_since_voting_is_refused(prefs, tmp_path):
    path = Path(pq.read_table(prefs / "images.parquet").column("image_path").to_pylist()[0])
    from PIL import Image

    Image.new("RGB", (8, 8), (1, 2, 3)).save(path)
    assert_error(push_cli("--prefs", str(prefs), "--repo-id", "me/d", "--version", "v1",
                          "--local-dir", str(tmp_path / "o")), "changed since voting", str(path))


def test_local_dir_that_evoq_did_not_write_is_refused(prefs, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("keep me")
    assert_error(push_cli("--prefs", str(prefs), "--repo-id", "me/d", "--version", "v1",
                          "--local-dir", str(out)), "holds no evoq.json")
    assert (out / "thesis.tex").read_text() == "keep me"


def test_include_votes_without_votes_folder(prefs, tmp_path):
    manifest = json.loads((prefs / "manifest.json").read_text())
    manifest["votes_dir"] = str(tmp_path / "gone")
    (prefs / "manifest.json").write_text(json.dumps(manifest))
    assert_error(push_cli("--prefs", str(prefs), "--repo-id", "me/d", "--version", "v1",
                          "--local-dir", str(tmp_path / "o"), "--include-votes"),
                 "--include-votes", "pass --votes VOTES_DIR")


def test_sharding_changes_files_not_content(prefs, tmp_path, monkeypatch):
    from evoq_data.publish import repo as dataset_repo
    from evoq_data.publish import tables

    one = run_push(prefs, "me/d", "v1", local_dir=tmp_path / "one", include_votes=True,
                   quiet=True)
    monkeypatch.setattr(tables, "SHARD_BYTES", 10_000)  # ~1 pair of images a file
    monkeypatch.setattr(dataset_repo, "VOTES_SHARD_ROWS", 1)  # one vote file a shard
    many = run_push(prefs, "me/d", "v1", local_dir=tmp_path / "many", include_votes=True,
                    quiet=True)
    assert many["content_hash"] == one["content_hash"]
    evoq = json.loads((tmp_path / "many" / "evoq.json").read_text())
    assert len(evoq["configs"]["preferences"]["files"]) > 1
    assert load_rows(tmp_path / "many", "preferences") == load_rows(tmp_path / "one",
                                                                     "preferences")


def test_offline_mode_blocks_pushing_before_any_work(prefs, tmp_path):
    # conftest sets HF_HUB_OFFLINE=1 for the whole test session
    assert_error(push_cli("--prefs", str(prefs), "--repo-id", "me/d", "--version", "v1",
                          "--endpoint", "http://127.0.0.1:9"), "HF_HUB_OFFLINE is set")


def test_console_script_prints_one_error_line_and_exits_1(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", "from evoq_data.cli import main; main()", "push", "--prefs",
         str(tmp_path / "nope"), "--repo-id", "me/d", "--version", "v1", "--local-dir",
         str(tmp_path / "o")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"error: PREFS_DIR not found: {tmp_path / 'nope'}"]
    assert proc.stdout == ""


def test_a_dataset_without_one_valid_vote_is_refused(tmp_path):
    """Every p* null (every answer unparsable): nothing to learn from, refused."""
    from fixtures.push import make_prefs_dir

    prefs = make_prefs_dir(tmp_path / "run", pairs=[(0, 1, 0, 0, 4), (1, 2, 0, 0, 3)])
    out = tmp_path / "dataset"
    assert_error(runner.invoke(app, ["push", "--prefs", str(prefs), "--repo-id", "me/d",
                                     "--version", "v1", "--local-dir", str(out)]),
                 "preferences.parquet: all 2 pairs have p_star null", "nothing to publish")
    assert not out.exists()
    # one valid vote anywhere is a dataset (the null pairs are published as null)
    prefs = make_prefs_dir(tmp_path / "run2", pairs=[(0, 1, 0, 0, 4), (1, 2, 1, 0, 3)])
    assert run_push(prefs, "me/d", "v1", local_dir=out, quiet=True)["rows"]["preferences"] == 2
