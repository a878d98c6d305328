"""`push --images embed|once|none`, `evoq_data.load_preferences`, the docs' join recipes, and
the readers (`evoq-train`'s loader, `eval --prefs`) over every layout."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fixtures.cli import assert_user_error
from fixtures.push import make_prefs_dir
from typer.testing import CliRunner

import evoq_data
from evoq_data.cli import app
from evoq_data.core.errors import EvoqError
from evoq_data.publish.push import run_push

runner = CliRunner()
DOCS = Path(__file__).resolve().parents[1] / "docs" / "push.md"


@pytest.fixture
def prefs(tmp_path) -> Path:
    return make_prefs_dir(tmp_path / "run")


@pytest.fixture
def pushed(prefs, tmp_path) -> dict[str, Path]:
    out = {}
    for layout in ("embed", "once", "none"):
        out[layout] = tmp_path / layout
        result = runner.invoke(app, ["push", "--prefs", str(prefs), "--repo-id", "me/d",
                                     "--version", "v1", "--local-dir", str(out[layout]),
                                     "--images", layout, "--quiet"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["images"] == layout
    return out


def test_once_stores_each_image_once_and_loads_the_embedded_rows(pushed, prefs):
    meta = {k: json.loads((p / "evoq.json").read_text()) for k, p in pushed.items()}
    assert meta["once"]["images"] == "once"
    once_prefs = pq.read_schema(next((pushed["once"] / "preferences").glob("*.parquet")))
    assert "image_a" not in once_prefs.names and "image_b" not in once_prefs.names
    # every image once: stored bytes equal the distinct image bytes (embed stores more)
    sizes = meta["once"]["image_bytes"]
    assert sizes["stored"] == sizes["unique"] > 0
    assert meta["embed"]["image_bytes"]["stored"] > 2 * sizes["unique"]
    blobs = [r["image"]["bytes"] for f in (pushed["once"] / "images").glob("*.parquet")
             for r in pq.read_table(f).to_pylist()]
    assert sum(map(len, blobs)) == sizes["unique"] and len(set(blobs)) == len(blobs)
    # the same rows, images included, as the embedded layout
    embed = evoq_data.load_preferences(pushed["embed"], decode=False)
    once = evoq_data.load_preferences(pushed["once"], decode=False)
    assert once[:] == embed[:]
    assert len(once) == len(pq.read_table(prefs / "preferences.parquet"))
    for row in once:
        for side in "ab":
            assert hashlib.sha256(row[f"image_{side}"]["bytes"]).hexdigest() == \
                row[f"image_{side}_id"]
    decoded = evoq_data.load_preferences(pushed["once"])[2]["image_b"]
    assert decoded.size == (48, 40)
    # materialized (what evoq-train reads): real columns, the same bytes
    real = evoq_data.load_preferences(pushed["once"], decode=False, materialize=True)
    assert "image_a" in real.column_names and real[:] == embed[:]


def test_none_reads_the_files_from_the_pool(pushed, prefs):
    pool = prefs.parent / "pool"
    rows = evoq_data.load_preferences(pushed["none"], images_root=pool, decode=False)
    for row in rows:
        for side in "ab":
            data = Path(row[f"image_{side}"]["path"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == row[f"image_{side}_id"]
    with pytest.raises(EvoqError, match=r"has no images here: .* 10 of them are not files"):
        evoq_data.load_preferences(pushed["none"], images_root=prefs)


def test_a_local_folder_holds_one_revision(pushed):
    assert len(evoq_data.load_preferences(pushed["once"], revision="v1")) == 5
    with pytest.raises(EvoqError, match="holds version v1, not v2"):
        evoq_data.load_preferences(pushed["once"], revision="v2")


@pytest.mark.parametrize("args, fragment", [
    (["--images", "once", "--no-embed-images"], "--no-embed-images means --images none"),
    (["--images", "twice"], "unknown --images 'twice'"),
])
def test_bad_layout_options(prefs, tmp_path, args, fragment):
    result = runner.invoke(app, ["push", "--prefs", str(prefs), "--repo-id", "me/d",
                                 "--version", "v1", "--local-dir", str(tmp_path / "o"), *args])
    assert_user_error(result, fragment)
    assert not (tmp_path / "o").exists()


def test_no_embed_images_is_none(prefs, tmp_path):
    run_push(prefs, "me/d", "v1", local_dir=tmp_path / "o", embed_images=False, quiet=True)
    meta = json.loads((tmp_path / "o" / "evoq.json").read_text())
    assert (meta["images"], meta["embed_images"]) == ("none", False)


def test_once_refuses_pairs_whose_image_is_not_in_images(prefs, tmp_path):
    table = pq.read_table(prefs / "images.parquet")
    pq.write_table(table.slice(1), prefs / "images.parquet")
    with pytest.raises(EvoqError, match="1 image.* not in images.parquet"):
        run_push(prefs, "me/d", "v1", local_dir=tmp_path / "o", images="once", quiet=True)


def recipe(name: str) -> str:
    text = DOCS.read_text(encoding="utf-8")
    block = re.search(rf"```python\n# recipe: {name}\n(.*?)```", text, re.S)
    assert block, f"docs/push.md has no '# recipe: {name}' block"
    return block.group(1)


@pytest.mark.parametrize("name", ["duckdb", "polars"])
def test_docs_join_recipes(name, pushed, prefs):
    if name == "polars":
        pytest.importorskip("polars")
    scope = {"DATASET": str(pushed["once"])}
    exec(recipe(name), scope)  # noqa: S102 - the documented recipe, verbatim
    expected = sorted(pq.read_table(prefs / "preferences.parquet").to_pylist(),
                      key=lambda r: r["pair_id"])
    got = scope["pairs"]
    assert [(r[0], r[1]) for r in got] == [(e["pair_id"], e["p_star"]) for e in expected]
    for row, exp in zip(got, expected, strict=True):
        assert hashlib.sha256(row[2]).hexdigest() == exp["image_a_id"]
        assert hashlib.sha256(row[3]).hexdigest() == exp["image_b_id"]


def test_evoq_train_reads_every_layout(pushed, prefs, monkeypatch):
    from evoq_train.data import load_preferences

    embed = load_preferences(str(pushed["embed"])).cast_column(
        "image_a", __import__("datasets").Image(decode=False))
    once = load_preferences(str(pushed["once"])).cast_column(
        "image_a", __import__("datasets").Image(decode=False))
    assert once["image_a"] == embed["image_a"] and once["p_star"] == embed["p_star"]
    monkeypatch.chdir(prefs.parent / "pool")  # none: the paths are relative to the pool
    none = load_preferences(str(pushed["none"])).cast_column(
        "image_b", __import__("datasets").Image(decode=False))
    assert [hashlib.sha256(Path(c["path"]).read_bytes()).hexdigest() for c in none["image_b"]] \
        == none["image_b_id"]


def test_eval_prefs_reads_every_layout(pushed, prefs, tmp_path):
    ids = pq.read_table(prefs / "images.parquet").column("image_id").to_pylist()
    pq.write_table(pa.table({"image_id": ids, "mos": [float(i) for i in range(len(ids))]}),
                   tmp_path / "mos.parquet")
    results = {}
    for name, source in (("prefs", prefs), *pushed.items()):
        out = tmp_path / f"eval-{name}"
        result = runner.invoke(app, ["eval", "--prefs", str(source), "--labels",
                                     str(tmp_path / "mos.parquet"), "--out", str(out)])
        assert result.exit_code == 0, result.output
        doc = json.loads((out / "accuracy.json").read_text())
        results[name] = {k: doc[k] for k in ("pairs", "decisive", "correct", "by_agreement")}
    assert results["prefs"]["pairs"] == 5 and results["prefs"]["decisive"] == 3
    assert results["embed"] == results["once"] == results["none"] == results["prefs"]


def run_card_snippets(folder: Path, repo_id: str, pool: Path) -> dict:
    """Run every python snippet of the card verbatim but for the repo id (-> the folder) and
    the pool placeholder (-> the pool); check there is one per config. Returns their names."""
    card = (folder / "README.md").read_text()
    meta = json.loads((folder / "evoq.json").read_text())
    blocks = re.findall(r"```python\n(.*?)```", card, re.S)
    for config in meta["configs"]:
        assert any(f'"{config}"' in b for b in blocks), config
    scope: dict = {}
    label = meta["paths"].get("relative_to") or "pool"
    for block in blocks:
        exec(block.replace(f'"{repo_id}"', repr(str(folder))).replace(  # noqa: S102
            f"path/to/{label}", str(pool)), scope)
    return scope


@pytest.mark.parametrize("layout", ["embed", "once", "none"])
def test_every_card_snippet_runs_against_the_pushed_folder(layout, prefs, tmp_path):
    out = tmp_path / "repo"
    exports = [] if layout == "none" else ["--export", "dpo,reasoning_dpo"]
    result = runner.invoke(app, ["push", "--prefs", str(prefs), "--repo-id", "me/snip",
                                 "--version", "v1", "--local-dir", str(out), "--images", layout,
                                 "--include-votes", "--quiet", *exports])
    assert result.exit_code == 0, result.output
    scope = run_card_snippets(out, "me/snip", prefs.parent / "pool")
    assert len(scope["prefs"]) == 5 and len(scope["images"]) == 5 and len(scope["votes"]) == 20
    if layout != "embed":
        pair = scope["prefs"][0]
        assert pair["image_a"].size == (48, 40)  # load_preferences: the images, read on access
    if layout != "none":
        assert len(scope["dpo"]) == 6 and len(scope["reasoning_dpo"]) == 2


@pytest.mark.parametrize("embed", [True, False])
def test_versions_published_before_the_layouts_still_load(embed, prefs, tmp_path, monkeypatch):
    """A folder in the first published format: data files without the content hash in their
    names, evoq.json with only `embed_images`, absolute paths (--keep-local-paths)."""
    import datasets

    # `datasets` caches a local folder by its name and file patterns: without the hash in the
    # names, an earlier run's folder of the same name would be served from the cache
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    out = tmp_path / "old"
    run_push(prefs, "me/d", "v1", local_dir=out, embed_images=embed, keep_local_paths=True,
             quiet=True)
    meta = json.loads((out / "evoq.json").read_text())
    del meta["images"]
    (out / "evoq.json").write_text(json.dumps(meta))
    card = (out / "README.md").read_text()
    for config in ("preferences", "images"):
        for f in (out / config).glob("*.parquet"):
            f.rename(f.with_name(re.sub(r"train-[0-9a-f]{12}-", "train-", f.name)))
        card = card.replace(meta["configs"][config]["pattern"], f"{config}/train-*.parquet")
    (out / "README.md").write_text(card)
    rows = evoq_data.load_preferences(out, decode=False)
    assert rows["pair_id"] == pq.read_table(prefs / "preferences.parquet").column(
        "pair_id").to_pylist()
    for row in rows:
        cell = row["image_a"]
        data = cell["bytes"] if embed else Path(cell["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["image_a_id"]
    from evoq_train.data import load_preferences

    assert load_preferences(str(out))["p_star"] == rows["p_star"]
    ids = pq.read_table(prefs / "images.parquet").column("image_id").to_pylist()
    pq.write_table(pa.table({"image_id": ids, "mos": [float(i) for i in range(len(ids))]}),
                   tmp_path / "mos.parquet")
    result = runner.invoke(app, ["eval", "--prefs", str(out), "--labels",
                                 str(tmp_path / "mos.parquet"), "--out", str(tmp_path / "e")])
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "e" / "accuracy.json").read_text())
    assert (doc["pairs"], doc["decisive"]) == (5, 3)


HUB_LOADER = """
import hashlib, json, sys
import evoq_data
from evoq_data.load import preference_rows
out = {}
for layout in ("embed", "once"):
    ds = evoq_data.load_preferences("me/lay-" + layout, revision="v1", decode=False)
    out[layout] = [{k: hashlib.sha256(v["bytes"]).hexdigest() if isinstance(v, dict) else v
                    for k, v in row.items()} for row in ds]
out["columns"] = preference_rows("me/lay-once", ["pair_id", "p_star"], revision="v1")
print(json.dumps(out))
"""


def test_once_from_the_hub_loads_the_embedded_rows(hub, prefs, tmp_path):
    import os
    import subprocess
    import sys

    from fixtures.hub import HUB_TOKEN

    for layout in ("embed", "once"):
        run_push(prefs, f"me/lay-{layout}", "v1", endpoint=hub.url, images=layout, quiet=True)
    env = dict(os.environ, HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="0", HF_DATASETS_OFFLINE="0",
               HF_HOME=str(tmp_path / "hf-home"), HF_TOKEN=HUB_TOKEN, HF_HUB_DISABLE_XET="1")
    proc = subprocess.run([sys.executable, "-c", HUB_LOADER], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["once"] == out["embed"] and len(out["once"]) == 5
    assert all(r["image_a"] == r["image_a_id"] for r in out["once"])  # sha256 of the bytes
    assert [r["pair_id"] for r in out["columns"]] == [r["pair_id"] for r in out["once"]]


@pytest.mark.parametrize("layout", ["once", "none"])
def test_evoq_train_grpo_trains_from_every_layout(layout, pushed, prefs, tiny_vlm, tmp_path,
                                                   monkeypatch):
    pytest.importorskip("trl")
    from evoq_train.cli import app as train_app

    if layout == "none":  # its paths are relative to the pool: train from there
        monkeypatch.chdir(prefs.parent / "pool")
    result = runner.invoke(train_app, ["grpo", "--config", "cpu-smoke", "--dataset",
                                       str(pushed[layout]), "--model", str(tiny_vlm),
                                       "--output-dir", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["global_steps"] == 2
    assert (summary["pairs_total"], summary["pairs_used"], summary["prompts"]) == (5, 4, 8)
