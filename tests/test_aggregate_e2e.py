"""`evoq-data aggregate` on votes made by the real `run_vote` (transformers engine, tiny VLM).

The tiny random model rarely writes a boxed 0 or 1, so most votes are invalid: that case must
come out counted (per parse_status, per pair) and never turned into a label.
"""

from __future__ import annotations

import json
from collections import Counter

import pyarrow.parquet as pq
from fixtures.votes import spec
from typer.testing import CliRunner

from evoq_data.cli import app
from evoq_data.pairs.sample import run_pairs
from evoq_data.votes.run import run_vote


def test_aggregate_votes_made_by_run_vote(tiny_vlm, image_pool, tmp_path):
    pairs = tmp_path / "pairs.parquet"
    run_pairs(str(image_pool), 4, 3, pairs, quiet=True)
    votes_dir = tmp_path / "votes"
    run_vote(pairs, spec("transformers", str(tiny_vlm), max_tokens=6), votes_dir, votes_per_pair=4, seed=2, chunk_pairs=2, quiet=True)
    raw = []
    for shard in sorted(votes_dir.glob("votes-*.parquet")):
        raw += pq.read_table(shard).to_pylist()
    assert len(raw) == 16

    out = tmp_path / "prefs"
    result = CliRunner().invoke(app, ["aggregate", "--votes", str(votes_dir), "--out",
                                      str(out), "--quiet"])
    assert result.exit_code == 0, (result.output, result.exception)
    summary = json.loads(result.stdout)
    assert summary["votes"] == 16 and summary["pairs"] == 4

    prefs = {r["pair_id"]: r for r in pq.read_table(out / "preferences.parquet").to_pylist()}
    input_pairs = {r["pair_id"]: r for r in pq.read_table(pairs).to_pylist()}
    assert set(prefs) == set(input_pairs)
    for pid, r in prefs.items():
        mine = [v for v in raw if v["pair_id"] == pid]
        # independent count from winner_id, which the aggregation never reads
        wins = Counter(v["winner_id"] for v in mine if v["winner_id"] is not None)
        assert r["votes_a"] == wins[r["image_a_id"]] and r["votes_b"] == wins[r["image_b_id"]]
        assert r["invalid_votes"] == sum(v["answer"] is None for v in mine)
        assert r["total_votes"] == 4
        assert (r["image_a_path"], r["image_b_path"]) == (input_pairs[pid]["image_a_path"],
                                                          input_pairs[pid]["image_b_path"])
        if r["votes_a"] + r["votes_b"] == 0:
            assert r["p_star"] is None
    stats = json.loads((out / "stats.json").read_text())
    assert stats["votes"]["by_parse_status"] == dict(Counter(v["parse_status"] for v in raw))
    invalid = sum(v["answer"] is None for v in raw)
    assert stats["votes"]["invalid"] == invalid and invalid > 0
    assert stats["pairs"]["without_valid_votes"] == sum(
        1 for r in prefs.values() if r["votes_a"] + r["votes_b"] == 0)
    (run,) = stats["provenance"]["runs"]
    assert run["model"] == str(tiny_vlm) and run["engine"] == "transformers"
    assert run["prompt_sha256"] == raw[0]["prompt_sha256"] and run["max_tokens"] == 6
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["votes"]["pairs_sha256"] and manifest["votes"]["seed"] == 2
