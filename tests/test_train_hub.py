"""Training data from a Hub dataset at a version tag (the loopback Hub of tests/fixtures/hub_server.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pyarrow.parquet as pq
import pytest
from fixtures.hub import HUB_TOKEN as TOKEN
from fixtures.push import PAIRS, make_prefs_dir

from evoq_data.publish.push import run_push

pytest.importorskip("trl")

READER = textwrap.dedent("""
    import json, sys
    from evoq_train.data import load_preferences, to_image_prompts
    from evoq_train.trainer import _dataset_lineage
    repo, revision = sys.argv[1:3]
    prompts, summary = to_image_prompts(load_preferences(repo, revision))
    rows = prompts.remove_columns(["image", "prompt"]).to_list()
    sizes = [im.size for im in prompts["image"]]
    print(json.dumps({"rows": rows, "summary": summary, "sizes": sizes,
                      "lineage": _dataset_lineage(repo, revision)}))
""")


def test_hub_dataset_at_a_version_becomes_pair_prompts(hub, tmp_path):
    v1 = make_prefs_dir(tmp_path / "r1")
    v2 = make_prefs_dir(tmp_path / "r2", seed=1, pairs=PAIRS[:2])
    s1 = run_push(v1, "me/evoq", "v1", endpoint=hub.url, quiet=True)
    run_push(v2, "me/evoq", "v2", endpoint=hub.url, quiet=True)

    env = dict(os.environ, HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="0", HF_DATASETS_OFFLINE="0",
               HF_HOME=str(tmp_path / "hf-home"), HF_TOKEN=TOKEN, HF_HUB_DISABLE_XET="1")
    proc = subprocess.run([sys.executable, "-c", READER, "me/evoq", "v1"], env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])

    prefs = [r for r in pq.read_table(v1 / "preferences.parquet").to_pylist()
             if r["p_star"] is not None]
    want = []
    for r in prefs:  # two consecutive rows per pair, p* from each image's side
        want.append({"pair_id": r["pair_id"], "image_id": r["image_a_id"],
                     "partner_id": r["image_b_id"], "role": "a", "p_star_self": r["p_star"]})
        want.append({"pair_id": r["pair_id"], "image_id": r["image_b_id"],
                     "partner_id": r["image_a_id"], "role": "b",
                     "p_star_self": 1.0 - r["p_star"]})
    assert got["rows"] == want
    assert got["summary"] == {"pairs_total": 5, "pairs_skipped_null_p_star": 1,
                              "pairs_used": 4, "prompts": 8}
    assert all(tuple(s) == (48, 40) for s in got["sizes"])  # decoded embedded images
    assert got["lineage"] == {"dataset": "me/evoq", "dataset_revision": "v1",
                              "dataset_repo_id": "me/evoq", "dataset_version": "v1",
                              "dataset_content_hash": s1["content_hash"]}
