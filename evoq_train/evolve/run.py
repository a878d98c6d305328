"""The loop of ``evoq-train evolve``: run every step of the plan that is not done, each heavy
one as a child process, recording each in ``RUN/state.json``.

Resume: a rerun of the same command holds the run's lock, stops what a killed earlier run
left running (processes of the recorded step's process group whose working directory is
RUN), checks every finished step's outputs against their recorded hashes (one line naming a
changed file, exit 1), skips those steps and runs the rest. The step that was in flight runs
again: ``evoq-data vote`` continues from the shards in its VOTES_DIR, ``evoq-train grpo``
from the last complete ``checkpoint-N`` (``--resume-from-checkpoint true``), ``push`` is
idempotent, and the other steps start over from a clean output.

Children: each runs in its own session (so its whole process tree can be stopped as one
group), is asked to die with evolve (Linux ``PR_SET_PDEATHSIG``), writes stderr to
``RUN/logs/round-<r>-<step>.log`` and its stdout summary after it. A failed step is one line
naming the step, its exit code, the child's last error line and the log.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from evoq_data.core.errors import EvoqError
from evoq_data.core.io import make_output_dir

from .checks import check_eval_contents, check_places, check_pool_labels, input_contents
from .config import EvolveSettings
from .context import RunContext, Sources
from .layout import RunLayout
from .state import RunState, hash_path, now, portable_identity, verify
from .steps import Step, build_steps


def _echo(message: str, quiet: bool) -> None:
    if not quiet:
        print(f"evolve: {message}", file=sys.stderr, flush=True)


@contextmanager
def run_lock(run: Path):
    """One evolve process per run folder (flock, released when the process dies)."""
    fh = open(RunLayout(run).lock, "a+")  # noqa: SIM115 - held for the whole run
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise EvoqError(f"another evoq-train evolve is running in {run}; wait for it to "
                            "finish or stop it first") from None
        except OSError:  # a filesystem without locks: go on unguarded
            pass
        yield
    finally:
        fh.close()


# --- child processes ---------------------------------------------------------------------

def _die_with_parent():
    """A preexec function: the child gets SIGKILL when evolve dies (Linux), so a killed
    evolve leaves no vote or training process behind."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:
        return None
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # evolve died before prctl took effect
            os._exit(1)

    return preexec


def _group_members(pgid: int, run: Path) -> list[int]:
    """Processes of process group ``pgid`` whose working directory is RUN (Linux /proc)."""
    found = []
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    target = os.path.realpath(run)
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            if os.getpgid(pid) != pgid or os.path.realpath(entry / "cwd") != target:
                continue
        except OSError:
            continue
        found.append(pid)
    return found


def stop_leftovers(run: Path, state: RunState, quiet: bool) -> None:
    """Stop what a killed earlier evolve left running (e.g. training workers under accelerate,
    which PR_SET_PDEATHSIG does not reach). Only processes of the recorded step's group that
    work in RUN are touched; the run lock guarantees their evolve is gone."""
    for name, rec in state.steps.items():
        pgid = rec.get("pid")
        if rec.get("status") != "running" or not pgid:
            continue
        pids = _group_members(pgid, run)
        if pids:
            _echo(f"{name}: stopping {len(pids)} process(es) the interrupted attempt left "
                  f"running ({', '.join(map(str, pids))})", quiet)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        deadline = time.monotonic() + 30
        while pids and time.monotonic() < deadline:
            pids = _group_members(pgid, run)
            time.sleep(0.1)
        if pids:
            raise EvoqError(f"processes {', '.join(map(str, pids))} of the interrupted step "
                            f"{name} are still running and would not stop; stop them and rerun")
        state.set_pid(name, None)


def _stop_group(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except OSError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _last_error(log: Path) -> str:
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    errors = [ln for ln in lines if ln.startswith("error:") or "Error:" in ln]
    text = (errors or lines or ["no output"])[-1]
    return text if len(text) <= 300 else text[:297] + "..."


def run_child(run: Path, state: RunState, step: Step, cmd: list[str], attempt: int) -> str:
    """Run one step's command; return its stdout. A non-zero exit is one line."""
    log = run / step.log
    log.parent.mkdir(parents=True, exist_ok=True)
    out_path = log.with_name(f".{log.stem}.stdout")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log, "ab") as log_fh, open(out_path, "wb") as out_fh:
        log_fh.write(f"\n=== {now()} attempt {attempt}: {shlex.join(cmd)}\n".encode())
        log_fh.flush()
        proc = subprocess.Popen(cmd, cwd=run, stdout=out_fh, stderr=log_fh,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                                preexec_fn=_die_with_parent())
        try:
            state.set_pid(step.name, proc.pid)
            rc = proc.wait()
        except BaseException:
            _stop_group(proc)
            raise
    state.set_pid(step.name, None)
    stdout = out_path.read_text(errors="replace")
    with open(log, "a", encoding="utf-8") as log_fh:
        log_fh.write(f"--- exit code {rc}; stdout:\n{stdout}")
    out_path.unlink(missing_ok=True)
    if rc != 0:
        raise EvoqError(f"step {step.name} failed (exit code {rc}): {_last_error(log)}; "
                        f"log: {log}")
    return stdout


def _input_records(state: RunState, paths: tuple[str, ...]) -> list[dict]:
    """Inputs by path, with the hash the producing step recorded (checked at start)."""
    recorded = {}
    for rec in state.steps.values():
        for out in rec.get("outputs") or []:
            recorded[out["path"]] = out["sha256"]
    return [{"path": p, "sha256": recorded.get(p)} for p in paths]


def remove_outputs(run: Path, step: Step) -> None:
    """Clear what a step left half-written, inside RUN only, before it runs again."""
    for rel in step.outputs:
        path = (run / rel).resolve()
        if run.resolve() not in path.parents:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def pending(state: RunState, step: Step) -> bool:
    """The step still has to run: not done, or redone until the step it prepares is."""
    if not state.done(step.name):
        return True
    return step.redo_until is not None and not state.done(step.redo_until)


def run_step(ctx: RunContext, step: Step, quiet: bool) -> None:
    """Run one step (its work, or its child command), record it, hash its outputs."""
    run, state = ctx.layout.root, ctx.require_state()
    previous = state.step(step.name)
    resumed = previous is not None
    started = time.perf_counter()
    _echo(f"{step.name}: {'resuming' if resumed else 'running'} (log {step.log})", quiet)
    try:
        if step.clean:
            remove_outputs(run, step)
        rec = state.begin(step.name, round=step.round, kind=step.kind, command=None,
                          inputs=_input_records(state, step.inputs), log=step.log,
                          resumed=resumed)
        facts = step.facts() if step.facts else {}
        summary: dict = {}
        if step.work:
            summary.update(step.work() or {})
        cmd = step.argv(facts)
        if cmd:
            rec["command"] = cmd
            stdout = run_child(run, state, step, cmd, rec["attempts"])
            if step.json_stdout and stdout.strip():
                try:
                    summary = json.loads(stdout)
                except json.JSONDecodeError:
                    summary = {}
        if step.finish:
            summary.update(step.finish(facts) or {})
        made = step.work is not None or cmd is not None
        outputs = [hash_path(run, o, step.exclude, what=f"output of {step.name}")
                   for o in (step.outputs if made else ())]
    except EvoqError as exc:
        if str(exc).startswith("step "):
            raise
        raise EvoqError(f"step {step.name}: {exc}") from exc
    state.finish(step.name, outputs=outputs, summary=summary,
                 seconds=time.perf_counter() - started)
    _echo(f"{step.name}: done in {time.perf_counter() - started:.1f} s", quiet)


def _raise_terminated(signum, _frame):
    from evoq_data.cli.app import Terminated

    raise Terminated()


def verify_finished(state: RunState, steps: list[Step]) -> None:
    """Every finished step's outputs against their recorded hashes, before any work."""
    for step in steps:
        if state.done(step.name):
            for rec in state.step(step.name).get("outputs") or []:
                verify(state.run, rec, step.name)


def open_state(settings: EvolveSettings, run: Path) -> RunState:
    """RUN's state, refused when the settings or the contents of the pool or the eval
    images differ from the run's (paths compared relative to RUN: a run moved with its pool
    continues)."""
    legacy = settings.identity()
    return RunState.open(run, portable_identity(legacy, run), settings.rounds,
                         contents=input_contents(settings), legacy=legacy)


def run_evolve(settings: EvolveSettings, *, quiet: bool = False) -> dict:
    """Run (or continue) an evolve run; return its summary."""
    from .lineage import write_lineage
    from .report import write_report

    settings.validate()
    check_places(settings)
    check_eval_contents(settings)
    check_pool_labels(settings)
    run = make_output_dir(Path(settings.run_dir).expanduser(), "--run-dir").resolve()
    layout = RunLayout(run)
    started = time.perf_counter()
    old_handler = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread
        old_handler = None
    try:
        with run_lock(run):
            state = open_state(settings, run)
            ctx = RunContext(settings, Sources.resolve(settings, run), layout, state)
            steps = build_steps(ctx)
            stop_leftovers(run, state, quiet)
            verify_finished(state, steps)
            ran, skipped = [], []
            for step in steps:
                if not pending(state, step):
                    skipped.append(step.name)
                    continue
                run_step(ctx, step, quiet)
                ran.append(step.name)
                write_lineage(ctx)
                if step.kind in ("grpo", "eval"):
                    write_report(ctx)
            write_lineage(ctx)
            write_report(ctx)
            state.data["finished_at"] = now()
            state.save()
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)
    rounds = [layout.round(r) for r in range(1, settings.rounds + 1)]
    datasets = [{"version": state.summary(rl.step("push")).get("version"),
                 "content_hash": state.summary(rl.step("push")).get("content_hash"),
                 "location": ctx.dataset_dir(rl.r) or ctx.repo_id} for rl in rounds]
    return {"run_dir": str(run), "rounds": settings.rounds, "steps_run": ran,
            "steps_skipped": skipped, "datasets": datasets,
            "models": [rl.model for rl in rounds], "lineage": str(layout.lineage),
            "report": str(layout.report_md), "plot": str(layout.report_png),
            "seconds": round(time.perf_counter() - started, 1)}
