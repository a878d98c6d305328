"""The published-paths rule: relative to a declared root, else bare file names, never a path
of the machine; and the last search before publishing refuses whatever a rule misses."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fixtures.cli import assert_user_error
from fixtures.images import make_images
from typer.testing import CliRunner

from evoq_data.cli import app

runner = CliRunner()


@pytest.fixture
def far_folder(tmp_path):
    """A folder that shares no folder with tmp_path but '/'."""
    base = next((b for b in ("/var/tmp", "/dev/shm", str(Path.home()))
                 if Path(b).is_dir() and Path(b).parts[1] != Path(tmp_path).parts[1]), None)
    if base is None:
        pytest.skip("no writable folder outside the temp folder's top folder")
    folder = Path(tempfile.mkdtemp(prefix="evoq-far-", dir=base))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _import_and_aggregate(tmp_path, far_folder, *extra):
    near = make_images(tmp_path / "near", 2, seed=1)
    far = make_images(far_folder, 2, seed=2)
    paths = near + far
    rows = ["image_a,image_b,winner"] + [f"{paths[a]},{paths[b]},a"
                                         for a, b in ((0, 2), (1, 3), (0, 3), (2, 1))]
    (tmp_path / "ratings.csv").write_text("\n".join(rows) + "\n")
    votes, prefs = tmp_path / "votes", tmp_path / "prefs"
    res = runner.invoke(app, ["votes", "import", "--input", str(tmp_path / "ratings.csv"),
                              "--source", "raters", "--out", str(votes), *extra])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["aggregate", "--votes", str(votes), "--out", str(prefs), "-q"])
    assert res.exit_code == 0, res.output
    return prefs, paths


def _push(prefs, out, *extra):
    return runner.invoke(app, ["push", "--prefs", str(prefs), "--repo-id", "me/d", "--version",
                               "v1", "--local-dir", str(out), "--include-votes", "-q", *extra])


def _published_paths(out: Path) -> set[str]:
    values = set()
    for config, cols in (("preferences", ("image_a_path", "image_b_path")),
                         ("images", ("image_path",)), ("votes", ("image_a_path", "image_b_path"))):
        for f in (out / config).glob("*.parquet"):
            table = pq.read_table(f, columns=list(cols))
            for c in cols:
                values |= set(table.column(c).to_pylist())
    return values


@pytest.mark.parametrize("embed", [True, False])
def test_images_in_unrelated_folders_are_published_by_file_name(tmp_path, far_folder, embed):
    prefs, paths = _import_and_aggregate(tmp_path, far_folder)
    out = tmp_path / "dataset"
    res = _push(prefs, out, *([] if embed else ["--no-embed-images"]))
    assert res.exit_code == 0, res.output
    assert _published_paths(out) == {p.name for p in paths}
    evoq = json.loads((out / "evoq.json").read_text())
    assert evoq["paths"] == {"local": False, "file_names": True}
    card = (out / "README.md").read_text()
    assert "hold bare file names" in card and "| image_a_path, image_b_path | file name" in card
    for f in out.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            for p in paths:
                assert str(p.parent).lstrip("/").encode() not in data, (f, p)


def test_images_root_declares_the_root(tmp_path, far_folder):
    """Images under the import's --images-root are published relative to it."""
    near = make_images(tmp_path / "pool" / "x", 2, seed=1)
    rows = ["image_a,image_b,winner", "x/img000.png,x/sub/img001.jpg,a"]
    (tmp_path / "ratings.csv").write_text("\n".join(rows) + "\n")
    res = runner.invoke(app, ["votes", "import", "--input", str(tmp_path / "ratings.csv"),
                              "--source", "raters", "--out", str(tmp_path / "votes"),
                              "--images-root", str(tmp_path / "pool")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["aggregate", "--votes", str(tmp_path / "votes"), "--out",
                              str(tmp_path / "prefs"), "-q"])
    assert res.exit_code == 0, res.output
    res = _push(tmp_path / "prefs", tmp_path / "dataset", "--pool-label", "lab-pool")
    assert res.exit_code == 0, res.output
    assert _published_paths(tmp_path / "dataset") == {"x/img000.png", "x/sub/img001.jpg"}
    assert len(near) == 2
    evoq = json.loads((tmp_path / "dataset" / "evoq.json").read_text())
    assert evoq["paths"] == {"local": False, "relative_to": "lab-pool"}


@pytest.mark.parametrize("published", [
    lambda a: a.lstrip("/"),                                  # the old rule: '/' stripped
    lambda a: "home/ann/" + Path(a).name,                     # a home folder, '/' stripped
    lambda a: "Users/ann/" + Path(a).name,
    lambda a: "root/" + Path(a).name,
    lambda a: "~/pics/" + Path(a).name,
    lambda a: a,
])
def test_the_last_search_refuses_a_machine_path(tmp_path, far_folder, monkeypatch, published):
    from evoq_data.publish import redact

    prefs, _ = _import_and_aggregate(tmp_path, far_folder)
    monkeypatch.setattr(redact.Redactor, "path",
                        lambda self, p: None if p is None else published(redact._abs(p)))
    out = tmp_path / "dataset"
    message = assert_user_error(_push(prefs, out, "--no-embed-images"),
                                "still names local paths", "_path", "nothing was published")
    assert not out.exists() and len(message) < 600


def test_a_pool_given_as_a_relative_folder_is_the_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_images(tmp_path / "pool", 4, seed=3)
    assert runner.invoke(app, ["pairs", "--images", "pool", "--num-pairs", "3", "--out",
                               "pairs.parquet", "-q"]).exit_code == 0
    res = runner.invoke(app, ["vote", "--pairs", "pairs.parquet", "--engine", "piqe", "-k", "2",
                              "--out", "votes", "-q"])
    assert res.exit_code == 0, res.output
    assert runner.invoke(app, ["aggregate", "--votes", "votes", "--out", "prefs",
                               "-q"]).exit_code == 0
    res = _push(tmp_path / "prefs", tmp_path / "dataset", "--no-embed-images")
    assert res.exit_code == 0, res.output
    published = _published_paths(tmp_path / "dataset")
    assert published and published <= {"img000.png", "sub/img001.jpg", "img002.png",
                                        "sub/img003.jpg"}
    assert json.loads((tmp_path / "dataset" / "evoq.json").read_text())["paths"]["local"] is False
    assert "relative_to" in json.loads((tmp_path / "dataset" / "evoq.json").read_text())["paths"]


@pytest.mark.parametrize("value, leak", [
    ("home/ann/x.png", True), ("Users/bob/pics/a.png", True), ("root/a.png", True),
    ("/data/a.png", True), ("~/a.png", True), ("C:\\pics\\a.png", True), ("\\\\srv\\a.png", True),
    ("home/kitchen.png", False), ("sub/img001.jpg", False), ("a.png", False),
])
def test_machine_path_rule(value, leak):
    import pyarrow as pa
    import pyarrow.compute as pc

    from evoq_data.publish.leaks import MACHINE_PATH_REGEX

    assert pc.match_substring_regex(pa.array([value]), MACHINE_PATH_REGEX)[0].as_py() is leak
