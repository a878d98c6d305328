"""`evoq-data vote` with the real transformers engine on the tiny VLM: rows, orders, seeds,
resume, shards, provenance checks, a SIGKILL in the middle, and bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from fixtures.cli import assert_user_error
from fixtures.votes import read_votes, spec
from typer.testing import CliRunner

from evoq_data.cli import app
from evoq_data.core.errors import EvoqError
from evoq_data.generation.prompts import compare_prompt
from evoq_data.pairs.sample import run_pairs
from evoq_data.votes.plan import plan_votes, shard_of
from evoq_data.votes.run import run_vote

runner = CliRunner()
FAST = dict(quiet=True)


def test_plan_votes_orders_and_seeds():
    plan = plan_votes("p1", 32, seed=5, order="balanced")
    assert plan.swapped.sum() == 16
    again = plan_votes("p1", 32, seed=5, order="balanced")
    assert (plan.swapped == again.swapped).all() and plan.seed_swapped == again.seed_swapped
    other = plan_votes("p2", 32, seed=5, order="random")
    assert plan_votes("p2", 32, seed=6, order="random").seed_unswapped != other.seed_unswapped
    # random order: swaps are a fair coin across many pairs
    share = np.mean([plan_votes(f"p{i}", 32, 0, "random").swapped.mean() for i in range(300)])
    assert abs(share - 0.5) < 0.02


def test_vote_rows_are_complete_and_consistent(tiny_vlm, pairs_file, tmp_path):
    out = tmp_path / "votes"
    summary = run_vote(pairs_file, spec("transformers", str(tiny_vlm), max_tokens=6), out, votes_per_pair=4, seed=11, order="balanced", chunk_pairs=4, **FAST)
    assert summary["pairs_voted"] == 6 and summary["votes"] == 24 and summary["shards_written"] == 2
    rows = read_votes(out)
    pairs = {r["pair_id"]: r for r in pq.read_table(pairs_file).to_pylist()}
    prompt = compare_prompt(True)
    assert len(rows) == 24
    assert {(r["pair_id"], r["vote_index"]) for r in rows} == {(p, v) for p in pairs for v in range(4)}
    for r in rows:
        plan = plan_votes(r["pair_id"], 4, 11, "balanced")
        assert r["swapped"] == bool(plan.swapped[r["vote_index"]])
        base = plan.seed_swapped if r["swapped"] else plan.seed_unswapped
        # seed = request seed + rank of this vote among the votes shown in the same order
        rank = int((plan.swapped[: r["vote_index"]] == r["swapped"]).sum())
        assert r["seed"] == base + rank
        assert (r["answer"] is None) == (r["parse_status"] != "ok") == (r["winner_id"] is None)
        if r["answer"] is not None:
            shown = [r["image_b_id"], r["image_a_id"]] if r["swapped"] else [r["image_a_id"], r["image_b_id"]]
            assert r["winner_id"] == shown[r["answer"]]
        p = pairs[r["pair_id"]]
        assert (r["image_a_id"], r["image_b_id"]) == (p["image_a_id"], p["image_b_id"])
        assert r["prompt_sha256"] == prompt.sha256 and r["prompt_id"] == "compare-v1+reasoning"
        assert r["model"] == str(tiny_vlm) and r["model_revision"].startswith("sha256:")
        assert (r["engine"], r["temperature"], r["max_tokens"]) == ("transformers", 1.0, 6)
        assert isinstance(r["raw_text"], str)
    assert summary["invalid_votes"] == sum(r["answer"] is None for r in rows)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["votes_per_pair"] == 4 and manifest["order"] == "balanced"
    assert manifest["prompt_template"] == prompt.template

    # rerun: nothing left to do, nothing duplicated
    again = run_vote(pairs_file, spec("transformers", str(tiny_vlm), max_tokens=6), out, votes_per_pair=4, seed=11, order="balanced", chunk_pairs=4, **FAST)
    assert again["pairs_voted"] == 0 and again["pairs_already_done"] == 6
    assert len(read_votes(out)) == 24

    # other settings into the same folder are refused, naming the difference
    with pytest.raises(EvoqError, match="temperature"):
        run_vote(pairs_file, spec("transformers", str(tiny_vlm), max_tokens=6, temperature=0.7), out, votes_per_pair=4, seed=11, order="balanced", **FAST)


def test_shards_split_pairs_without_collision(tiny_vlm, pairs_file, tmp_path):
    out = tmp_path / "votes"
    for i in range(3):
        run_vote(pairs_file, spec("transformers", str(tiny_vlm), max_tokens=6), out, votes_per_pair=2, seed=0, num_shards=3, shard_index=i, **FAST)
    rows = read_votes(out)
    assert len(rows) == 12 and len({(r["pair_id"], r["vote_index"]) for r in rows}) == 12
    for shard in out.glob("votes-*.parquet"):
        index = int(shard.name.split("-")[1])
        ids = set(pq.read_table(shard, columns=["pair_id"]).column(0).to_pylist())
        assert all(shard_of(p, 3) == index for p in ids)


def test_no_reasoning_and_greedy_are_recorded(tiny_vlm, pairs_file, tmp_path):
    out = tmp_path / "votes"
    run_vote(pairs_file, spec("transformers", str(tiny_vlm), max_tokens=6, reasoning=False, temperature=0.0), out, votes_per_pair=2, seed=0, **FAST)
    rows = read_votes(out)
    assert {r["prompt_id"] for r in rows} == {"compare-v1"}
    assert {r["prompt_sha256"] for r in rows} == {compare_prompt(False).sha256}
    by_pair = {}
    for r in rows:  # greedy: both votes in the same shown order are identical
        by_pair.setdefault((r["pair_id"], r["swapped"]), set()).add(r["raw_text"])
    assert all(len(texts) == 1 for texts in by_pair.values())


def _vote_cmd(pairs_file, model, out):
    return [sys.executable, "-m", "evoq_data.cli", "vote", "--pairs", str(pairs_file),
            "--model", str(model), "--engine", "transformers", "-k", "4", "--seed", "3",
            "--max-tokens", "24", "--chunk-pairs", "1", "--out", str(out), "--quiet"]


@pytest.mark.slow  # ~15-30 s of transformers votes; the fast twin is test_sigkill_then_resume_gives_the_uninterrupted_votes_fast (PIQE, same store and resume code)
def test_sigkill_then_resume_gives_the_uninterrupted_votes(tiny_vlm, pairs_file, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    reference = tmp_path / "reference"  # uninterrupted, in this process
    run_vote(pairs_file, spec("transformers", str(tiny_vlm), max_tokens=24), reference, votes_per_pair=4, seed=3, chunk_pairs=1, quiet=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_vote_cmd(pairs_file, tiny_vlm, killed), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(killed.glob("votes-*.parquet"))) < 2:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    on_disk = read_votes(killed)
    assert 0 < len(on_disk) < 24, "the kill should land mid-run"
    assert len(on_disk) % 4 == 0  # complete pairs only
    resumed = subprocess.run(_vote_cmd(pairs_file, tiny_vlm, killed), env=env,
                             capture_output=True, text=True, check=True)
    summary = json.loads(resumed.stdout)
    assert summary["pairs_already_done"] == len(on_disk) // 4
    keys = ("pair_id", "vote_index", "swapped", "raw_text", "answer", "winner_id",
            "parse_status", "seed")
    got = [tuple(r[k] for k in keys) for r in read_votes(killed)]
    want = [tuple(r[k] for k in keys) for r in read_votes(reference)]
    assert got == want
    assert not [p for p in killed.iterdir() if p.name.endswith(".tmp")]


def test_vote_bad_input(tmp_path, pairs_file, tiny_vlm):
    def vote(*extra, pairs=pairs_file, model=tiny_vlm):
        return runner.invoke(app, ["vote", "--pairs", str(pairs), "--model", str(model),
                                   "--out", str(tmp_path / "v"), "-q", *extra])

    assert_user_error(vote(pairs=tmp_path / "nope.parquet"), "pairs file not found")
    import pyarrow as pa

    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"pair_id": ["x"], "left": ["y"]}), bad)
    assert_user_error(vote(pairs=bad), "lacks column(s)", "image_a_id")
    assert_user_error(vote("-k", "0"), "at least 1")
    assert_user_error(vote("--engine", "magic"), "unknown engine 'magic'")
    assert_user_error(vote("--order", "balanced", "-k", "3"), "even")
    llm_only = tmp_path / "text-model"
    llm_only.mkdir()
    (llm_only / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    assert_user_error(vote(model=llm_only), "not a vision-language model")
    assert_user_error(vote(model=tmp_path / "absent-model"), "model not found")
    assert_user_error(vote("--temperature", "-1"), "--temperature must be >= 0")
    assert_user_error(vote("--top-p", "1.5"), "--top-p must be in (0, 1]")
    assert_user_error(vote("--max-tokens", "0"), "--max-tokens must be at least 1")
    assert_user_error(vote("--engine-arg", "bogus=1"), "no setting bogus", "device")
    assert not (tmp_path / "v").exists()  # refused before anything was written
    doubled = tmp_path / "doubled.parquet"
    table = pq.read_table(pairs_file)
    pq.write_table(pa.concat_tables([table, table.slice(0, 1)]), doubled)
    assert_user_error(vote(pairs=doubled), "more than once", table["pair_id"][0].as_py())
    assert_user_error(runner.invoke(app, ["vote", "--pairs", str(pairs_file), "--model",
                                          str(tiny_vlm), "--out", str(pairs_file), "-q"]),
                      "is a file; VOTES_DIR must be a folder")


def test_a_second_worker_on_the_same_shard_is_refused(tiny_vlm, pairs_file, tmp_path):
    import fcntl

    out = tmp_path / "votes"
    out.mkdir()
    with open(out / ".lock-00001-of-00002", "a") as held:  # worker 1 of 2 is running
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(EvoqError, match="already voting shard 1 of 2"):
            run_vote(pairs_file, spec("transformers", str(tiny_vlm), max_tokens=6), out, votes_per_pair=2, num_shards=2, shard_index=1, **FAST)
        # the other shard is free, and a trailing slash names the same model
        run_vote(pairs_file, spec("transformers", f"{tiny_vlm}/", max_tokens=6), out, votes_per_pair=2, num_shards=2, shard_index=0, **FAST)
    run_vote(pairs_file, spec("transformers", str(tiny_vlm), max_tokens=6), out, votes_per_pair=2, num_shards=2, shard_index=1, **FAST)
    rows = read_votes(out)
    assert len(rows) == 12 and {r["model"] for r in rows} == {str(tiny_vlm)}


@pytest.mark.slow  # ~15 s; the fast twin is test_sigterm_says_what_was_kept_and_resume_completes_fast (PIQE)
def test_sigterm_says_what_was_kept_and_resume_completes(tiny_vlm, pairs_file, tmp_path):
    """SIGTERM mid-run: one line saying what was kept and how to resume, exit 143, no
    traceback and no transformers loading bar (--quiet); the rerun finishes the job."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "termed"
    proc = subprocess.Popen(_vote_cmd(pairs_file, tiny_vlm, out), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob("votes-*.parquet")):
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("terminated (SIGTERM): every finished output file is kept")
    assert "rerun the same command to resume" in last
    assert "Traceback" not in err and "%|" not in err  # --quiet silences every bar
    kept = len(read_votes(out))
    assert 0 < kept < 24 and kept % 4 == 0
    resumed = subprocess.run(_vote_cmd(pairs_file, tiny_vlm, out), env=env,
                             capture_output=True, text=True, check=True)
    assert json.loads(resumed.stdout)["pairs_already_done"] == kept // 4
    assert len(read_votes(out)) == 24


def test_two_workers_with_other_settings_started_together_one_is_refused(tmp_path):
    """The manifest is claimed atomically before any engine loads: of two workers started at
    the same moment on a new VOTES_DIR with different seeds, exactly one votes."""
    pytest.importorskip("pypiqe")
    from fixtures.images import make_images

    make_images(tmp_path / "pool", 4)
    pairs = tmp_path / "pairs.parquet"
    res = runner.invoke(app, ["pairs", "--images", str(tmp_path / "pool"), "--num-pairs", "4",
                              "--out", str(pairs), "--quiet"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "votes"

    def cmd(seed, shard):
        return [sys.executable, "-m", "evoq_data.cli", "vote", "--pairs", str(pairs),
                "--engine", "piqe", "-k", "2", "--seed", str(seed), "--num-shards", "2",
                "--shard-index", str(shard), "--out", str(out), "--quiet"]

    procs = [subprocess.Popen(cmd(seed, shard), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for seed, shard in ((1, 0), (2, 1))]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    loser_err = next(err for code, err in results if code == 1)
    assert "already holds votes made with other settings" in loser_err and "seed" in loser_err
    winner_seed = 1 if results[0][0] == 0 else 2
    assert json.loads((out / "manifest.json").read_text())["seed"] == winner_seed
    winner_shard = 0 if winner_seed == 1 else 1
    assert all(f"-{winner_shard:05d}-of-00002-" in p.name for p in out.glob("votes-*.parquet"))


def _small_pairs(tmp_path) -> Path:
    """4 pairs of 4 small images."""
    from fixtures.images import make_images

    make_images(tmp_path / "pool", 4)
    pairs = tmp_path / "pairs.parquet"
    run_pairs(str(tmp_path / "pool"), 4, 0, pairs, quiet=True)
    return pairs


def test_a_resume_with_other_engine_args_is_refused(tiny_vlm, pairs_file, tmp_path):
    """Every --engine-arg is recorded in the manifest and compared on resume: a folder never
    mixes votes of two settings."""
    out = tmp_path / "v"

    def vote(*engine_args):
        args = [a for value in engine_args for a in ("--engine-arg", value)]
        return runner.invoke(app, ["vote", "--pairs", str(pairs_file), "--model",
                                   str(tiny_vlm), "--max-tokens", "4", "-k", "2", "--out",
                                   str(out), "-q", *args])

    first = vote("max_pixels=200704", "dtype=float32")
    assert first.exit_code == 0, first.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["engine_args"] == {"max_pixels": 200704, "dtype": "float32"}
    assert_user_error(vote("max_pixels=100352", "dtype=float32"),
                      "--engine-arg max_pixels: 200704 -> 100352", "use a new --out folder")
    assert_user_error(vote("max_pixels=200704"), "--engine-arg dtype: 'float32' -> (not given)")
    assert_user_error(vote("max_pixels=200704", "dtype=float32", "min_pixels=3136"),
                      "--engine-arg min_pixels: (not given) -> 3136")
    assert json.loads((out / "manifest.json").read_text()) == manifest  # nothing claimed
    again = vote("dtype=float32", "max_pixels=200704")  # the same settings, in any order
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["pairs_already_done"] == 6
    assert len(read_votes(out)) == 12


def test_a_folder_of_an_older_evoq_without_engine_args_is_refused(tmp_path):
    pytest.importorskip("pypiqe")
    pairs = _small_pairs(tmp_path)
    out = tmp_path / "v"
    run_vote(pairs, spec("piqe"), out, votes_per_pair=2, quiet=True)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["engine_args"] == {}
    del manifest["engine_args"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EvoqError, match="--engine-arg: not recorded"):
        run_vote(pairs, spec("piqe"), out, votes_per_pair=2, quiet=True)


@pytest.mark.parametrize("args, message", [
    (["-k", "1000000000000"], "--votes-per-pair must be at most 4096 (the paper's K is 32), "
                              "got 1000000000000"),
    (["-k", "4098", "--order", "balanced"], "--votes-per-pair must be at most 4096"),
    (["--num-shards", "100000", "--shard-index", "3"], "--num-shards must be at most 99999"),
])
def test_sizes_are_checked_before_anything_is_claimed(tmp_path, args, message):
    """A size too big for memory or for the shard names is one line, exit 1, and leaves
    nothing behind, so the corrected command runs."""
    pytest.importorskip("pypiqe")
    pairs = _small_pairs(tmp_path)
    out = tmp_path / "v"
    base = ["vote", "--pairs", str(pairs), "--engine", "piqe", "--out", str(out), "-q"]
    assert_user_error(runner.invoke(app, base + args), message)
    assert not out.exists()
    fixed = runner.invoke(app, base + ["-k", "2"])
    assert fixed.exit_code == 0, fixed.output
    assert json.loads(fixed.stdout)["votes"] == 8


@pytest.mark.parametrize("engine", [
    # the stdout redirect does not depend on the engine: piqe checks it fast
    "piqe", pytest.param("transformers", marks=pytest.mark.slow)])
def test_stdout_holds_the_summary_alone_and_its_times(engine, tiny_vlm, tmp_path):
    """`evoq-data vote ... | jq` works: stdout is the JSON summary and nothing else; the
    summary splits the seconds into engine load and voting."""
    pytest.importorskip("pypiqe" if engine == "piqe" else "torch")
    pairs = _small_pairs(tmp_path)
    model = ["--model", str(tiny_vlm), "--max-tokens", "4"] if engine == "transformers" else []
    cmd = [sys.executable, "-m", "evoq_data.cli", "vote", "--pairs", str(pairs), "--engine",
           engine, *model, "-k", "2", "--chunk-pairs", "2", "--out", str(tmp_path / "v")]
    for extra in (["--quiet"], []):
        done = subprocess.run(cmd + extra, capture_output=True, text=True,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
        assert done.returncode == 0, done.stderr[-2000:]
        summary = json.loads(done.stdout)
        if extra:  # the first run votes; the second finds everything done
            assert (summary["votes"], summary["shards_written"]) == (8, 2)
            assert summary["load_seconds"] > 0 and summary["vote_seconds"] > 0
            assert summary["close_seconds"] >= 0
            assert summary["load_seconds"] + summary["vote_seconds"] + \
                summary["close_seconds"] == pytest.approx(summary["seconds"], abs=0.002)
        else:
            assert summary["pairs_already_done"] == 4
            assert (summary["load_seconds"], summary["vote_seconds"],
                    summary["close_seconds"]) == (0, 0, 0)


def test_the_engines_shutdown_is_not_vote_time(tmp_path, monkeypatch):
    """An engine that takes its time to shut down (vLLM on CPU: 2-3 s) is timed as
    close_seconds: vote_seconds is what the settings cost, so shares of it compare settings.
    (Every runner closes its engine after its last chunk; the summary's clock is one.)"""
    pytest.importorskip("pypiqe")
    from fixtures.engines import slow_piqe_close

    slow = 0.6
    slow_piqe_close(monkeypatch, slow)
    res = runner.invoke(app, ["vote", "--pairs", str(_small_pairs(tmp_path)), "--engine",
                              "piqe", "-k", "2", "--chunk-pairs", "2", "--out",
                              str(tmp_path / "v"), "--quiet"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["votes"] == 8
    assert slow <= summary["close_seconds"] < slow + 1.0
    assert summary["vote_seconds"] < summary["close_seconds"]
    assert summary["load_seconds"] + summary["vote_seconds"] + summary["close_seconds"] == \
        pytest.approx(summary["seconds"], abs=0.002)


PIQE_PAIRS = 40  # x K = 4 votes: PIQE_VOTES rows when a run completes
PIQE_VOTES = 4 * PIQE_PAIRS


def _piqe_pairs(tmp_path):
    """40 pairs of 256 x 256 images: PIQE takes long enough for a signal to land mid-run
    (16 pairs left ~0.5 s after the first shard file, and a SIGTERM sent then once found the
    run finished, exit 0, in the full suite)."""
    from fixtures.pairs import make_pairs_file

    return make_pairs_file(tmp_path / "in", images=16, pairs=PIQE_PAIRS, image_seed=4, seed=2,
                           size=(256, 256))


def _piqe_vote_cmd(pairs, out):
    return [sys.executable, "-m", "evoq_data.cli", "vote", "--pairs", str(pairs), "--engine",
            "piqe", "-k", "4", "--seed", "3", "--chunk-pairs", "1", "--out", str(out),
            "--quiet"]


def test_sigkill_then_resume_gives_the_uninterrupted_votes_fast(tmp_path):
    """The SIGKILL test above on PIQE (seconds instead of minutes): a kill mid-run leaves
    only complete pairs and no temporary file, and the rerun gives the uninterrupted rows."""
    pytest.importorskip("pypiqe")
    pairs = _piqe_pairs(tmp_path)
    reference = tmp_path / "reference"
    run_vote(pairs, spec("piqe"), reference, votes_per_pair=4, seed=3, chunk_pairs=1,
             quiet=True)
    killed = tmp_path / "killed"
    cmd = _piqe_vote_cmd(pairs, killed)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(killed.glob("votes-*.parquet"))) < 2:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    on_disk = read_votes(killed)
    assert 0 < len(on_disk) < PIQE_VOTES, "the kill should land mid-run"
    assert len(on_disk) % 4 == 0  # complete pairs only
    resumed = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert json.loads(resumed.stdout)["pairs_already_done"] == len(on_disk) // 4
    keys = ("pair_id", "vote_index", "swapped", "raw_text", "answer", "winner_id",
            "parse_status", "seed")
    assert [tuple(r[k] for k in keys) for r in read_votes(killed)] == \
        [tuple(r[k] for k in keys) for r in read_votes(reference)]
    assert not [p for p in killed.iterdir() if p.name.endswith(".tmp")]


def test_sigterm_says_what_was_kept_and_resume_completes_fast(tmp_path):
    """The SIGTERM test above on PIQE (seconds instead of a minute): one line saying what was
    kept and how to resume, exit 143, no traceback; the rerun finishes the job. (The
    transformers loading bar under --quiet stays the slow test's own check.)"""
    pytest.importorskip("pypiqe")
    pairs = _piqe_pairs(tmp_path)
    out = tmp_path / "termed"
    cmd = _piqe_vote_cmd(pairs, out)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob("votes-*.parquet")):
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("terminated (SIGTERM): every finished output file is kept")
    assert "rerun the same command to resume" in last
    assert "Traceback" not in err
    kept = len(read_votes(out))
    assert 0 < kept < PIQE_VOTES and kept % 4 == 0
    resumed = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert json.loads(resumed.stdout)["pairs_already_done"] == kept // 4
    assert len(read_votes(out)) == PIQE_VOTES
