"""``RUN/state.json``: what an evolve run has done, so that a rerun continues where it stopped.

The file is rewritten atomically (temp file, fsync, rename) after every change, so a crash
at any moment leaves the previous or the next version. It holds the settings the run was
started with (paths relative to RUN, and their fingerprint), the contents of the pool and
eval images it reads (hashed), and one record per step::

    {"schema_version": 1, "stage": "evolve", "fingerprint": "sha256:...", "settings": {...},
     "contents": {"pool": {"images": 6, "sha256": ...}, "evals": {"koniq": {...}}},
     "rounds": 2, "created_at": ..., "updated_at": ...,
     "steps": {"round-1/vote": {"round": 1, "kind": "vote", "status": "running" | "done",
                                "attempts": 1, "command": [...], "log": "logs/round-1-vote.log",
                                "inputs": [{"path": ..., "kind": "file", "sha256": ...}],
                                "outputs": [{"path": ..., "kind": "folder", "sha256": ...,
                                             "files": {"rel/path": "<sha256>", ...}}],
                                "summary": {...}, "pid": 1234, "started_at": ...,
                                "finished_at": ..., "seconds": 12.3}, ...}}

A finished step's outputs are hashed file by file (sha256), so a rerun can check them and
name the one file that changed. Hidden files (a vote worker's lock) and, for a model folder,
the ``checkpoint-*`` folders are not part of an output.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

from evoq_data import __version__
from evoq_data.core.errors import EvoqError
from evoq_data.core.ids import file_sha256
from evoq_data.core.io import write_json_atomic
from evoq_data.core.manifests import read_manifest

from .config import changed_fields, fingerprint, option_name
from .layout import STATE

SCHEMA_VERSION = 1


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --- content hashes ----------------------------------------------------------------------

def folder_files(path: Path, exclude: tuple[str, ...] = ()) -> dict[str, str]:
    """sha256 of every file under ``path`` by relative path; hidden files and top-level
    entries matching a pattern of ``exclude`` are left out."""
    files = {}
    for p in sorted(path.rglob("*")):
        rel = p.relative_to(path)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if any(fnmatch.fnmatch(rel.parts[0], pat) for pat in exclude):
            continue
        if p.is_file():
            files[rel.as_posix()] = file_sha256(p)
    return files


def tree_hash(files: dict[str, str]) -> str:
    """One hash of a folder: sha256 over its sorted relative paths and their file hashes."""
    h = hashlib.sha256()
    for rel in sorted(files):
        h.update(f"{rel}\0{files[rel]}\n".encode())
    return "sha256:" + h.hexdigest()


def resolve(run: Path, rel: str) -> Path:
    p = Path(rel)
    return p if p.is_absolute() else run / p


def hash_path(run: Path, rel: str, exclude: tuple[str, ...] = (), what: str = "output") -> dict:
    """The record of one file or folder: its path as given, kind, hash (and per-file hashes)."""
    path = resolve(run, rel)
    if path.is_file():
        return {"path": rel, "kind": "file", "sha256": "sha256:" + file_sha256(path)}
    if path.is_dir():
        files = folder_files(path, exclude)
        rec = {"path": rel, "kind": "folder", "sha256": tree_hash(files), "files": files}
        if exclude:
            rec["exclude"] = list(exclude)
        return rec
    raise EvoqError(f"{what} {path} is missing")


def verify(run: Path, record: dict, step: str) -> None:
    """One line naming the file when a recorded output is missing or changed."""
    path = resolve(run, record["path"])
    fix = "restore it, or start a new --run-dir"
    if record["kind"] == "file":
        if not path.is_file():
            raise EvoqError(f"{path} (output of the finished step {step}) is missing; {fix}")
        if "sha256:" + file_sha256(path) != record["sha256"]:
            raise EvoqError(f"{path} (output of the finished step {step}) changed since the "
                            f"step recorded it; {fix}")
        return
    if not path.is_dir():
        raise EvoqError(f"{path} (output of the finished step {step}) is missing; {fix}")
    current = folder_files(path, tuple(record.get("exclude", ())))
    for rel, digest in sorted(record["files"].items()):
        if rel not in current:
            raise EvoqError(f"{path / rel} (output of the finished step {step}) is missing; "
                            f"{fix}")
        if current[rel] != digest:
            raise EvoqError(f"{path / rel} (output of the finished step {step}) changed since "
                            f"the step recorded it; {fix}")
    extra = sorted(set(current) - set(record["files"]))
    if extra:
        raise EvoqError(f"{path / extra[0]} appeared in the output of the finished step {step} "
                        f"after it was recorded; remove it, or start a new --run-dir")


# --- the state file ----------------------------------------------------------------------

def portable_identity(identity: dict, run: Path) -> dict:
    """The settings as a moved run still matches them: local paths relative to RUN, and
    the files read by name (recipe, accelerate config, eval manifests) by content only."""
    import os

    doc = dict(identity)
    for key in ("pool", "model", "bootstrap_model", "local_dir"):
        value = doc.get(key)
        if isinstance(value, str) and os.path.isabs(value):
            doc[key] = os.path.relpath(value, run)
    for key in ("train_config", "accelerate_config", "pool_labels"):
        if isinstance(doc.get(key), dict):
            doc[key] = {"sha256": doc[key]["sha256"]}
    doc["evals"] = [{"name": e["name"], "sha256": e["sha256"]} for e in doc.get("evals", [])]
    return doc


def _bad(path: Path, key: str, want: str) -> EvoqError:
    return EvoqError(f"{path}: {key} must be {want}; the file was edited or damaged: restore "
                     "it, or start a new --run-dir")


def check_shape(path: Path, data: dict) -> None:
    """One line naming the file and the key when a state file is not as evolve writes it."""
    if not isinstance(data.get("settings"), dict):
        raise _bad(path, "'settings'", "an object")
    steps = data.get("steps")
    if not isinstance(steps, dict):
        raise _bad(path, "'steps'", f"an object of step records by name, not {_kind(steps)}")
    for name, rec in steps.items():
        key = f"steps[{name!r}]"
        if not isinstance(rec, dict):
            raise _bad(path, key, "an object")
        if rec.get("status") not in ("running", "done"):
            raise _bad(path, f"{key}.status", "'running' or 'done'")
        if not isinstance(rec.get("round"), int):
            raise _bad(path, f"{key}.round", "an integer")
        if rec["status"] != "done":
            continue
        outputs = rec.get("outputs")
        if not isinstance(outputs, list):
            raise _bad(path, f"{key}.outputs", f"a list, not {_kind(outputs)}")
        for i, out in enumerate(outputs):
            okey = f"{key}.outputs[{i}]"
            if not isinstance(out, dict):
                raise _bad(path, okey, "an object")
            for field, want in (("path", str), ("sha256", str)):
                if not isinstance(out.get(field), want):
                    raise _bad(path, f"{okey}.{field}", "a string")
            if out.get("kind") not in ("file", "folder"):
                raise _bad(path, f"{okey}.kind", "'file' or 'folder'")
            if out["kind"] == "folder" and not isinstance(out.get("files"), dict):
                raise _bad(path, f"{okey}.files", "an object of file hashes")
        if rec.get("summary") is not None and not isinstance(rec["summary"], dict):
            raise _bad(path, f"{key}.summary", "an object")


def _kind(value) -> str:
    return "null" if value is None else f"a {type(value).__name__}"


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


class RunState:
    """The run's state file, loaded or created, saved atomically on every change."""

    def __init__(self, run: Path, data: dict) -> None:
        self.run = run
        self.data = data

    @property
    def path(self) -> Path:
        return self.run / STATE

    @classmethod
    def open(cls, run: Path, identity: dict, rounds: int, *, contents: dict | None = None,
             legacy: dict | None = None) -> RunState:
        """The state of RUN; refuses a run made with other settings, naming the fields, or
        whose inputs' ``contents`` changed. ``legacy``: the identity as evolve recorded it
        before paths were relative to RUN (such a state is rewritten with ``identity``)."""
        path = run / STATE
        digest = fingerprint(identity)
        if path.is_file():
            data = read_manifest(path, "evolve state")
            if data.get("stage") != "evolve" or data.get("schema_version") != SCHEMA_VERSION:
                raise EvoqError(f"{path} is not an evolve state file of schema version "
                                f"{SCHEMA_VERSION}")
            check_shape(path, data)
            if legacy is not None and data.get("fingerprint") == fingerprint(legacy):
                data["settings"], data["fingerprint"] = identity, digest
            if data.get("fingerprint") != digest:
                old = data.get("settings") or {}
                fields = changed_fields(old, identity)
                details = "; ".join(f"{option_name(f)}: {_short(old.get(f))} -> "
                                    f"{_short(identity.get(f))}" for f in fields)
                raise EvoqError(f"{run} holds a run started with other settings ({details}); "
                                "rerun with the original settings or use a new --run-dir")
            if contents is not None and data.get("contents") is not None:
                change = changed_contents(data["contents"], contents)
                if change:
                    raise EvoqError(f"{run}: {change}; restore them, or start a new --run-dir")
            state = cls(run, data)
            data["rounds"] = rounds
            if contents is not None:
                data["contents"] = contents
            state.save()
            return state
        if run.exists() and any(not p.name.startswith(".") for p in run.iterdir()):
            raise EvoqError(f"--run-dir {run} is not empty and holds no {STATE}; give a new "
                            "or empty folder (or the folder of an earlier evolve run)")
        data = {"schema_version": SCHEMA_VERSION, "stage": "evolve", "evoq_version": __version__,
                "fingerprint": digest, "settings": identity, "contents": contents,
                "rounds": rounds, "created_at": now(), "updated_at": now(), "steps": {}}
        state = cls(run, data)
        state.save()
        return state

    def save(self) -> None:
        self.data["updated_at"] = now()
        write_json_atomic(self.data, self.path)

    # --- steps ---------------------------------------------------------------------------

    @property
    def steps(self) -> dict:
        return self.data["steps"]

    def step(self, name: str) -> dict | None:
        return self.steps.get(name)

    def done(self, name: str) -> bool:
        rec = self.step(name)
        return bool(rec) and rec.get("status") == "done"

    def begin(self, name: str, *, round: int, kind: str, command: list[str] | None,
              inputs: list[dict], log: str, resumed: bool) -> dict:
        rec = self.steps.get(name) or {"round": round, "kind": kind, "attempts": 0}
        rec.update(status="running", command=command, inputs=inputs, log=log,
                   attempts=rec.get("attempts", 0) + 1, started_at=now(), pid=None,
                   resumed=resumed)
        for key in ("outputs", "summary", "finished_at", "seconds"):
            rec.pop(key, None)
        self.steps[name] = rec
        self.save()
        return rec

    def set_pid(self, name: str, pid: int | None) -> None:
        self.steps[name]["pid"] = pid
        self.save()

    def finish(self, name: str, *, outputs: list[dict], summary: dict, seconds: float) -> None:
        rec = self.steps[name]
        rec.update(status="done", outputs=outputs, summary=summary, finished_at=now(),
                   seconds=round(seconds, 3), pid=None)
        self.save()

    def last_round(self) -> int:
        """The highest round a step was recorded for (0: none)."""
        return max((rec["round"] for rec in self.steps.values()), default=0)

    def summary(self, name: str) -> dict:
        rec = self.step(name) or {}
        return rec.get("summary") or {}


def changed_contents(old: dict, new: dict) -> str | None:
    """A description of what changed between two :func:`input_contents`, else None."""
    if old.get("pool") != new.get("pool"):
        before, now = old.get("pool") or {}, new.get("pool") or {}
        return (f"the images of --pool changed since the run started ({before.get('images')} "
                f"image file(s) then, {now.get('images')} now, other contents)")
    for name in sorted(set(old.get("evals") or {}) | set(new.get("evals") or {})):
        if (old.get("evals") or {}).get(name) != (new.get("evals") or {}).get(name):
            return (f"the images of --eval {name} changed since the run started (their SRCC "
                    "would no longer compare across rounds)")
    return None
