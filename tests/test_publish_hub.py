"""`evoq-data push` through the real huggingface_hub client and `datasets.load_dataset`,
against the loopback Hub in tests/fixtures/hub_server.py (plain LFS, no Xet)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fixtures.hub import HUB_TOKEN as TOKEN
from fixtures.push import make_prefs_dir
from fixtures.votes import spec
from typer.testing import CliRunner

from evoq_data.cli import app
from evoq_data.core.errors import EvoqError
from evoq_data.publish.push import run_push

LOADER = textwrap.dedent("""
    import hashlib, json, sys
    import datasets
    out = []
    for repo, config, revision in json.loads(sys.argv[1]):
        ds = datasets.load_dataset(repo, config, revision=revision, split="train")
        for name, feature in ds.features.items():
            if isinstance(feature, datasets.Image):
                ds = ds.cast_column(name, datasets.Image(decode=False))
        rows = ds.to_list()
        for row in rows:
            for k, v in row.items():
                if isinstance(v, dict) and "bytes" in v:
                    row[k] = hashlib.sha256(v["bytes"]).hexdigest()
        out.append(rows)
    print(json.dumps(out, default=str))
""")


def load_remote(hub, tmp_path: Path, items: list[tuple[str, str, str]]) -> list:
    """load_dataset in a fresh process (HF_ENDPOINT and offline mode are read at import)."""
    env = dict(os.environ, HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="0", HF_DATASETS_OFFLINE="0",
               HF_HOME=str(tmp_path / "hf-home"), HF_TOKEN=TOKEN, HF_HUB_DISABLE_XET="1")
    proc = subprocess.run([sys.executable, "-c", LOADER, json.dumps(items)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def expected_prefs(prefs: Path, pool: Path | None = None) -> list[dict]:
    """The PREFS_DIR's rows as published: paths relative to the pool (by default the
    push fixture's, beside PREFS_DIR)."""
    pool = pool or prefs.parent / "pool"
    rows = pq.read_table(prefs / "preferences.parquet").to_pylist()
    for row in rows:  # embedded images must be exactly the voted files: sha256 == image id
        row["image_a"], row["image_b"] = row["image_a_id"], row["image_b_id"]
        for side in "ab":
            row[f"image_{side}_path"] = Path(row[f"image_{side}_path"]).relative_to(pool).as_posix()
    return rows


def test_versions_load_back_exactly_and_repush_is_a_noop(hub, tmp_path, capfd, caplog):
    caplog.set_level("DEBUG")
    p1 = make_prefs_dir(tmp_path / "run1", seed=0)
    p2 = make_prefs_dir(tmp_path / "run2", seed=1,
                        pairs=[(0, 1, 1, 3, 0), (2, 3, 4, 0, 0), (1, 4, 2, 1, 1)])
    s1 = run_push(p1, "me/evoq", "v1", endpoint=hub.url, include_votes=True, quiet=True)
    assert s1["status"] == "published"
    s2 = run_push(p2, "me/evoq", "v2", endpoint=hub.url, quiet=True)
    repo = hub.repo("me/evoq")
    assert repo.tags == {"v1": s1["commit"], "v2": s2["commit"]}
    assert repo.commits[s2["commit"]].parent == s1["commit"]
    # v2 has no votes config: its commit removed v1's vote files, v1 keeps them
    assert not any(p.startswith("votes/") for p in repo.commits[s2["commit"]].tree)
    assert any(p.startswith("votes/") for p in repo.commits[s1["commit"]].tree)

    n_commits = len(repo.commits)
    again = run_push(p1, "me/evoq", "v1", endpoint=hub.url, include_votes=True, quiet=True)
    assert again == {**again, "status": "unchanged", "commit": s1["commit"]}
    assert len(repo.commits) == n_commits and repo.tags["v1"] == s1["commit"]

    result = CliRunner().invoke(app, ["push", "--prefs", str(p2), "--repo-id", "me/evoq",
                                      "--version", "v1", "--endpoint", hub.url, "--quiet"])
    assert result.exit_code == 1 and isinstance(result.exception, EvoqError)
    assert "version v1 of me/evoq already exists with other content" in str(result.exception)
    assert len(repo.commits) == n_commits and repo.tags["v1"] == s1["commit"]

    local = tmp_path / "local-v1"
    run_push(p1, "me/evoq", "v1", local_dir=local, include_votes=True, quiet=True)
    v1, v1_votes, v2, v2_default, v1_local = load_remote(hub, tmp_path, [
        ("me/evoq", "preferences", "v1"), ("me/evoq", "votes", "v1"),
        ("me/evoq", "preferences", "v2"), ("me/evoq", None, "v2"),
        (str(local), "preferences", None)])
    assert v1 == expected_prefs(p1)
    assert v2 == v2_default == expected_prefs(p2)  # preferences is the default config
    assert v1_local == v1
    assert len(v1_votes) == 20 and sum(v["answer"] is None for v in v1_votes) == 5

    # the token was sent (the server checks it) but is nowhere else
    commits = [r for r in hub.requests if r["method"] == "POST" and "/commit/" in r["path"]]
    assert len(commits) == 2
    assert all({k.lower(): v for k, v in r["headers"].items()}["authorization"]
               == f"Bearer {TOKEN}" for r in commits)
    out, err = capfd.readouterr()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for text in (out, err, logged, result.output):
        assert TOKEN not in text
    for commit in repo.commits.values():
        for entry in commit.tree.values():
            assert TOKEN.encode() not in (entry.data or repo.lfs[entry.lfs_oid])


def test_dropped_upload_then_rerun_gives_one_complete_version(hub, tmp_path):
    prefs = make_prefs_dir(tmp_path / "run")
    hub.faults = {"lfs_put": 1, "commit": 100}  # a PUT cut halfway; every commit dropped
    with pytest.raises(EvoqError, match="failed after 5 attempts.*rerun the same command"):
        run_push(prefs, "me/flaky", "v1", endpoint=hub.url, quiet=True)
    assert hub.faults["lfs_put"] == 0  # the cut PUT happened (and the client re-sent it)
    repo = hub.repo("me/flaky")
    assert repo.tags == {} and len(repo.commits) == 1  # only the repo's initial commit
    assert set(repo.commits[repo.branches["main"]].tree) == {".gitattributes"}
    uploaded = set(repo.lfs)
    assert uploaded  # the data files reached LFS storage before the commit failed

    hub.faults = {}
    seen = len(hub.requests)
    summary = run_push(prefs, "me/flaky", "v1", endpoint=hub.url, quiet=True)
    assert summary["status"] == "published"
    assert len(repo.commits) == 2 and repo.tags == {"v1": repo.branches["main"]}
    assert not [r for r in hub.requests[seen:] if r["method"] == "PUT"]  # nothing re-sent
    tree = repo.commits[repo.tags["v1"]].tree
    c12 = summary["content_hash"].removeprefix("sha256:")[:12]
    assert {"README.md", "evoq.json", f"preferences/train-{c12}-00000-of-00001.parquet",
            f"images/train-{c12}-00000-of-00001.parquet"} <= set(tree)
    assert json.loads(tree["evoq.json"].data)["content_hash"] == summary["content_hash"]


def test_lost_commit_response_and_tag_failure_converge_without_a_second_commit(hub, tmp_path):
    prefs = make_prefs_dir(tmp_path / "run")
    hub.faults = {"commit_after": 1, "tag": 2}
    summary = run_push(prefs, "me/lossy", "v1", endpoint=hub.url, quiet=True)
    repo = hub.repo("me/lossy")
    assert summary["status"] == "published"
    assert len(repo.commits) == 2  # the initial commit and the version, nothing duplicated
    assert repo.tags == {"v1": repo.branches["main"]} == {"v1": summary["commit"]}


def test_wrong_token_is_one_clear_line(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    prefs = make_prefs_dir(tmp_path / "run")
    with pytest.raises(EvoqError, match="refused the token .*write access") as info:
        run_push(prefs, "me/denied", "v1", endpoint=hub.url, quiet=True)
    assert "hf_wrong" not in str(info.value)
    assert hub.repos == {}


def test_pairs_vote_aggregate_push_chain(hub, answering_vlm, image_pool, tmp_path):
    """A dataset made by the real stages (tiny VLM votes) is pushed and loads back exactly."""
    tiny_vlm = answering_vlm  # (a random model's votes are all invalid: push refuses them)
    from evoq_data.aggregate.run import run_aggregate
    from evoq_data.pairs.sample import run_pairs
    from evoq_data.votes.run import run_vote

    pairs = tmp_path / "pairs.parquet"
    run_pairs(str(image_pool), 5, 3, pairs, quiet=True)
    run_vote(pairs, spec("transformers", str(tiny_vlm), max_tokens=6, reasoning=False),
             tmp_path / "votes", votes_per_pair=4, seed=2, quiet=True)
    run_aggregate(tmp_path / "votes", tmp_path / "prefs", quiet=True)
    result = CliRunner().invoke(app, ["push", "--prefs", str(tmp_path / "prefs"), "--repo-id",
                                      "lab/chain", "--version", "v1", "--endpoint", hub.url,
                                      "--include-votes", "--quiet"])
    assert result.exit_code == 0, (result.output, result.exception)
    summary = json.loads(result.stdout)
    assert summary["rows"]["votes"] == 20 and summary["status"] == "published"
    prefs, votes = load_remote(hub, tmp_path, [("lab/chain", "preferences", "v1"),
                                               ("lab/chain", "votes", "v1")])
    assert prefs == expected_prefs(tmp_path / "prefs", image_pool)
    raw = [r for s in sorted((tmp_path / "votes").glob("votes-*.parquet"))
           for r in pq.read_table(s).to_pylist()]
    assert [(v["pair_id"], v["vote_index"], v["raw_text"]) for v in votes] == \
        [(v["pair_id"], v["vote_index"], v["raw_text"]) for v in raw]
    repo = hub.repo("lab/chain")
    card = repo.commits[repo.tags["v1"]].tree["README.md"].data.decode()
    vote_manifest = json.loads((tmp_path / "votes" / "manifest.json").read_text())
    assert vote_manifest["prompt_template"] in card
    assert f"| model | `{tiny_vlm.name}` |" in card and str(tiny_vlm) not in card
    assert "Position bias" in card and "assets/agreement_hist.png" in card
    assert {"assets/agreement_hist.png", "assets/position_bias.png"} <= set(
        repo.commits[repo.tags["v1"]].tree)


def test_bad_input_publishes_nothing_and_private_is_honoured(hub, tmp_path):
    prefs = make_prefs_dir(tmp_path / "run")
    missing = pq.read_table(prefs / "images.parquet").column("image_path").to_pylist()[0]
    Path(missing).rename(Path(missing).with_suffix(".moved"))
    with pytest.raises(EvoqError, match="1 image.s. missing from disk"):
        run_push(prefs, "me/half", "v1", endpoint=hub.url, quiet=True)
    assert hub.repos == {} and hub.requests == []  # validated before any request
    Path(missing).with_suffix(".moved").rename(missing)
    run_push(prefs, "me/half", "v1", endpoint=hub.url, private=True, quiet=True)
    assert hub.repo("me/half").private


def test_same_content_as_a_new_version_gets_its_own_card(hub, tmp_path):
    prefs = make_prefs_dir(tmp_path / "run")
    s1 = run_push(prefs, "me/alias", "v1", endpoint=hub.url, quiet=True)
    seen = len(hub.requests)
    s2 = run_push(prefs, "me/alias", "v2", endpoint=hub.url, quiet=True)
    repo = hub.repo("me/alias")
    assert s2["content_hash"] == s1["content_hash"] and s2["commit"] != s1["commit"]
    old, new = repo.commits[s1["commit"]].tree, repo.commits[s2["commit"]].tree
    assert set(old) == set(new)
    assert all(old[p].lfs_oid == new[p].lfs_oid for p in old if p.endswith(".parquet"))
    assert 'revision="v2"' in new["README.md"].data.decode()
    assert not [r for r in hub.requests[seen:] if r["method"] == "PUT"]  # no data re-sent
