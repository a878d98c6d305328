"""`evoq-data push`: nothing private published, column descriptions from one source, version
integrity of a --local-dir, and what killed pushes leave behind."""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import re
import shutil
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fixtures.cli import assert_user_error
from fixtures.push import make_prefs_dir
from typer.testing import CliRunner

from evoq_data.cli import app
from evoq_data.core.names import version_problem
from evoq_data.publish.card import COLUMN_DOCS, column_docs_markdown
from evoq_data.publish.push import run_push
from evoq_data.publish.repo import IMAGES_COLUMNS, PREFS_COLUMNS

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent
SECRET_USER = "jdoe-secret-user"


def push_cli(*args: str):
    return runner.invoke(app, ["push", *args])


def _strings(value):
    """Every string inside a decoded Parquet value (nested structs and lists included)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def occurrences(folder: Path, needles: list[str]) -> list[str]:
    """``file: needle`` for each needle found in a file's raw bytes or, for Parquet, in any
    decoded value (Parquet pages are compressed, so the raw bytes alone would hide them)."""
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        texts = [data.decode("latin-1")]
        if path.suffix == ".parquet":
            texts += list(_strings(pq.read_table(path).to_pylist()))
        found += [f"{path.relative_to(folder)}: {n}" for n in needles
                  if any(n in t for t in texts)]
    return found


@pytest.fixture
def private_run(tmp_path, monkeypatch):
    """A PREFS_DIR under a home folder named after a user, voted by a local model folder
    there, with the model's path in stats.json and stats.md as aggregate writes them."""
    home = tmp_path / "home" / SECRET_USER
    monkeypatch.setenv("HOME", str(home))
    model = home / "checkpoints" / "qwen-round1"
    prefs = make_prefs_dir(home / "work" / "run1", model=str(model))
    stats = json.loads((prefs / "stats.json").read_text())
    stats["provenance"] = {"mixed": False, "runs": [{"model": str(model), "votes": 20}]}
    (prefs / "stats.json").write_text(json.dumps(stats))
    (prefs / "stats.md").write_text((prefs / "stats.md").read_text()
                                    + f"\n| model |\n|---|\n| {model} |\n")
    return prefs, home, model


@pytest.mark.parametrize("embed", [True, False])
def test_published_folder_holds_no_local_path(private_run, tmp_path, embed):
    prefs, home, model = private_run
    out = tmp_path / "published"
    args = ["--prefs", str(prefs), "--repo-id", "me/d", "--version", "v1", "--local-dir",
            str(out), "--include-votes", "--quiet"]
    result = push_cli(*args, *([] if embed else ["--no-embed-images"]))
    assert result.exit_code == 0, result.output
    needles = [str(tmp_path), str(home), SECRET_USER, "/tmp/"]
    real_home = pwd.getpwuid(os.getuid()).pw_dir  # the test's HOME is the fake one
    if real_home != "/":
        needles.append(real_home + "/")
    assert occurrences(out, needles) == []
    # what is published instead: paths below the pool, the model by its folder name
    rows = pq.read_table(next((out / "preferences").glob("*.parquet"))).to_pylist()
    assert rows[0]["image_a_path"] == "img000.png" and rows[0]["image_b_path"] == "sub/img001.jpg"
    votes = pq.read_table(next((out / "votes").glob("*.parquet"))).to_pylist()
    assert {v["model"] for v in votes} == {"qwen-round1"}
    assert {v["image_a_path"] for v in votes} >= {"img000.png", "sub/img001.jpg"}
    evoq = json.loads((out / "evoq.json").read_text())
    assert evoq["aggregate"]["votes"]["model"] == "qwen-round1"
    assert "| model | `qwen-round1` |" in (out / "README.md").read_text()

    # the same push with --keep-local-paths publishes them, on purpose (the check above works)
    kept = tmp_path / "kept"
    result = push_cli(*[a if a != str(out) else str(kept) for a in args], "--keep-local-paths")
    assert result.exit_code == 0, result.output
    found = occurrences(kept, [str(home), str(model)])
    assert any(f.startswith("evoq.json") for f in found)
    assert any(f.startswith("votes/") and f.endswith(str(model)) for f in found)
    assert json.loads((kept / "evoq.json").read_text())["paths"] == {"local": True}


def test_pool_label_names_the_pool(private_run, tmp_path):
    prefs, _, _ = private_run
    out = tmp_path / "o"
    summary = run_push(prefs, "me/d", "v1", local_dir=out, pool_label="koniq-train",
                       quiet=True)
    assert summary["paths"] == {"local": False, "relative_to": "koniq-train"}
    assert "named here `koniq-train`" in (out / "README.md").read_text()
    assert_user_error(push_cli("--prefs", str(prefs), "--repo-id", "me/d", "--version", "v2",
                               "--local-dir", str(out), "--pool-label", "../x"),
                      "malformed --pool-label")


def test_a_path_that_escapes_redaction_is_refused(private_run, tmp_path, monkeypatch):
    """The last guard: whatever the rules miss, the built folder is searched before it is
    published."""
    from evoq_data.publish import redact

    prefs, home, _ = private_run
    monkeypatch.setattr(redact.Redactor, "value", lambda self, v: v)  # a rule that misses
    out = tmp_path / "o"
    assert_user_error(push_cli("--prefs", str(prefs), "--repo-id", "me/d", "--version", "v1",
                               "--local-dir", str(out)),
                      "still names local paths", str(home), "--keep-local-paths")
    assert not out.exists()


# --- item 8: the card's column descriptions ---------------------------------------------

def _doc_table(markdown: str, heading: str) -> dict[str, str]:
    """column cell -> meaning cell of the first table after ``heading``."""
    part = markdown[markdown.index(heading):]
    rows = {}
    for line in part.splitlines()[1:]:
        if line.startswith("#"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0] not in ("column", "---"):
            rows[cells[0]] = cells[-1]
    return rows


def test_column_descriptions_are_one_source_with_the_docs():
    aggregate = (ROOT / "docs" / "aggregate.md").read_text()
    for config, heading, columns in (("preferences", "### `preferences.parquet`", PREFS_COLUMNS),
                                     ("images", "### `images.parquet`", IMAGES_COLUMNS)):
        documented = _doc_table(aggregate, heading)
        ours = COLUMN_DOCS[config]
        shared = [k for k in ours if k in documented]
        # every formula column is described in both places, with the same words
        assert {k for k in ours if not re.search(r"_id|_path|^image", k)} <= set(shared), config
        assert {k: ours[k] for k in shared} == {k: documented[k] for k in shared}
        described = {c.strip() for key in ours for c in key.split(",")}
        assert set(columns) <= described
    assert "of the majority share" in COLUMN_DOCS["preferences"]["wilson_low, wilson_high"]
    assert COLUMN_DOCS["images"]["win_rate"].startswith("(wins + ties / 2) / comparisons")
    assert column_docs_markdown() in (ROOT / "docs" / "push.md").read_text()


def test_card_describes_columns_from_the_source_and_names_the_judge(tmp_path):
    prefs = make_prefs_dir(tmp_path / "vlm", model="Qwen/Qwen2.5-VL-7B-Instruct")
    run_push(prefs, "me/d", "v1", local_dir=tmp_path / "a", quiet=True)
    card = (tmp_path / "a" / "README.md").read_text()
    for config in ("preferences", "images"):
        for name, doc in COLUMN_DOCS[config].items():
            assert f"| {name} | {doc} |" in card, name
    assert "Wilson interval of vote_fraction_a" not in card
    assert "labelled by the votes of the vision-language model " \
           "`Qwen/Qwen2.5-VL-7B-Instruct`" in card
    piqe = make_prefs_dir(tmp_path / "piqe", model="piqe", engine="piqe")
    run_push(piqe, "me/d", "v1", local_dir=tmp_path / "b", quiet=True)
    card = (tmp_path / "b" / "README.md").read_text()
    assert "labelled by the votes of a classical metric (PIQE)" in card
    assert "vision-language model's" not in card and "not a vision-language model" in card
    run_push(piqe, "me/d", "v1", local_dir=tmp_path / "c", embed_images=False, quiet=True)
    card = (tmp_path / "c" / "README.md").read_text()
    assert "| image_a, image_b |" not in card and "| image_a_path, image_b_path |" in card


# --- item 10: versions of a --local-dir ----------------------------------------------------

BAD_VERSIONS = ["v1..2", "v1.", "v1.lock", "HEAD", "main", ".v1", "v1/2", "v 1", "v1~",
                "v1^", "v1:", "v1?", "v1*", "v1[", "v1\\2", "@", "v@{1", "-v1", "", "v1\x07"]
GOOD_VERSIONS = ["v1", "2026.11", "v1.0.0-rc.1", "round_2", "v1.locked", "v@1", "V1", "v1-"]


@pytest.mark.parametrize("version", BAD_VERSIONS)
def test_version_names_follow_git_ref_rules(version, prefs_small, tmp_path):
    assert version_problem(version) is not None
    assert_user_error(push_cli("--prefs", str(prefs_small), "--repo-id", "me/d", "--version",
                               version, "--local-dir", str(tmp_path / "o")), "malformed version")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("version", GOOD_VERSIONS)
def test_valid_version_names(version):
    assert version_problem(version) is None


@pytest.mark.skipif(shutil.which("git") is None, reason="git is the independent check")
def test_version_rules_agree_with_git():
    for version in BAD_VERSIONS + GOOD_VERSIONS:
        if version in ("HEAD", "main", "-v1", "", "v1/2", "@") or "\x07" in version:
            continue  # evoq's own rules (one component), or what an argument cannot carry
        git = subprocess.run(["git", "check-ref-format", f"refs/tags/{version}"],
                             capture_output=True).returncode == 0
        assert git == (version_problem(version) is None), version


@pytest.fixture
def prefs_small(tmp_path):
    return make_prefs_dir(tmp_path / "run1")


def test_an_old_version_cannot_be_rewritten_after_a_newer_one(tmp_path):
    first = make_prefs_dir(tmp_path / "run1")
    second = make_prefs_dir(tmp_path / "run2", seed=1)
    out = tmp_path / "repo"
    v1 = run_push(first, "me/d", "v1", local_dir=out, quiet=True)
    v2 = run_push(second, "me/d", "v2", local_dir=out, quiet=True)
    assert v2["status"] == "written"
    versions = json.loads((out / ".evoq-versions.json").read_text())["versions"]
    assert versions == {"v1": v1["content_hash"], "v2": v2["content_hash"]}
    # other content under v1, now that the folder holds v2: refused, as on the Hub
    assert_user_error(push_cli("--prefs", str(second), "--repo-id", "me/d", "--version", "v1",
                               "--local-dir", str(out)), "already holds version v1",
                      v1["content_hash"])
    assert json.loads((out / "evoq.json").read_text())["version"] == "v2"
    # v1's own content again: nothing to do, the folder keeps v2
    assert run_push(first, "me/d", "v1", local_dir=out, quiet=True)["status"] == "unchanged"
    assert json.loads((out / "evoq.json").read_text())["version"] == "v2"
    # the same content under a new name is a new version, as on the Hub
    assert run_push(first, "me/d", "v3", local_dir=out, quiet=True)["status"] == "written"
    versions = json.loads((out / ".evoq-versions.json").read_text())["versions"]
    assert list(versions) == ["v1", "v2", "v3"] and versions["v3"] == v1["content_hash"]


# --- item 14: what a killed push leaves -------------------------------------------------------

def test_stale_staging_folders_are_removed_live_ones_kept(prefs_small, tmp_path):
    stale = tmp_path / ".evoq-push-999999-abc"  # a killed push: its lock is free
    (stale / "repo").mkdir(parents=True)
    (stale / ".lock").touch()
    (stale / "repo" / "big.parquet").write_bytes(b"x" * 1000)
    old_style = tmp_path / ".evoq-push-oldstyle"  # an evoq without locks, from before
    old_style.mkdir()
    os.utime(old_style, (1_000_000_000, 1_000_000_000))
    live = tmp_path / ".evoq-push-123-live"  # a push running now holds its lock
    live.mkdir()
    with open(live / ".lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = push_cli("--prefs", str(prefs_small), "--repo-id", "me/d", "--version", "v1",
                          "--local-dir", str(tmp_path / "repo"), "--quiet")
        assert result.exit_code == 0, result.output
        assert not stale.exists() and not old_style.exists()
        assert live.is_dir()
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".evoq-push-"))
    assert left == [live.name]


def test_a_push_killed_mid_swap_gets_its_folder_back(prefs_small, tmp_path):
    out = tmp_path / "repo"
    v1 = run_push(prefs_small, "me/d", "v1", local_dir=out, quiet=True)
    # killed between the two renames: the old version beside, no folder
    os.replace(out, tmp_path / ".repo.old-999999")
    other = make_prefs_dir(tmp_path / "run2", seed=1)
    assert_user_error(push_cli("--prefs", str(other), "--repo-id", "me/d", "--version", "v1",
                               "--local-dir", str(out)), "already holds version v1")
    assert json.loads((out / "evoq.json").read_text())["content_hash"] == v1["content_hash"]
    assert not (tmp_path / ".repo.old-999999").exists()
