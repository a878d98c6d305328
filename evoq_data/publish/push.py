"""``evoq-data push``: a PREFS_DIR becomes a versioned dataset repository (Hub or local folder).

One version is one commit holding the whole repository (built by
:mod:`evoq_data.publish.repo`), tagged VERSION. A version is identified by the content hash
of its data, so pushing the same data again makes no commit, and other data under an existing
tag is refused. Every Hub step is idempotent (the repo, a commit already on main with this
content, the tag), so a rerun after any interruption converges to one complete commit and tag;
LFS files already uploaded are not sent again. The token comes from HF_TOKEN or the saved
login and is never printed, logged or written.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from evoq_data.core.errors import EvoqError
from evoq_data.core.io import make_output_dir, write_json_atomic
from evoq_data.publish.redact import Redactor, find_leaks, pool_hash, pool_root
from evoq_data.publish.repo import build_repo_folder, load_prefs_dir, pairs_manifest, read_json

log = logging.getLogger(__name__)

REPO_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
RETRIES = 5  # whole-push attempts on transient failures
BACKOFF_S = 2.0  # first wait; doubles each attempt
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


# --- version names -----------------------------------------------------------------------

def version_problem(version: str) -> str | None:
    """Why ``version`` cannot be a tag name, or None. The rules are git's check-ref-format
    rules for one component of ``refs/tags/<version>`` (a version is one component: no '/'),
    plus evoq's own: not 'main' or 'HEAD', not starting with '-', at most 128 characters."""
    if not version:
        return "it is empty"
    bad = sorted({c for c in version if ord(c) < 0x20 or ord(c) == 0x7F or c in " ~^:?*[\\/"})
    if bad:
        return "git refuses the character(s) " + " ".join(repr(c) for c in bad)
    for test, why in (
        (version.startswith("."), "git refuses a name that starts with '.'"),
        (version.endswith("."), "git refuses a name that ends with '.'"),
        (version.endswith(".lock"), "git refuses a name that ends with '.lock'"),
        (".." in version, "git refuses '..' in a name"),
        ("@{" in version, "git refuses '@{' in a name"),
        (version == "@", "git reads '@' as HEAD"),
        (version in ("HEAD", "main"), f"'{version}' names a branch or HEAD, not a version"),
        (version.startswith("-"), "a name that starts with '-' reads as an option"),
        (len(version) > 128, "it is longer than 128 characters"),
    ):
        if test:
            return why
    return None


# --- local folder ------------------------------------------------------------------------

VERSIONS_FILE = ".evoq-versions.json"  # every version written to a --local-dir: its hash
STAGING_PREFIX = ".evoq-push-"
PROCESS_START = time.time()


def _local_versions(local_dir: Path) -> dict[str, str]:
    """version -> content hash of every version this folder has held (the local tags)."""
    versions: dict[str, str] = {}
    path = local_dir / VERSIONS_FILE
    if path.is_file():
        data = read_json(path, "local version list")
        if not isinstance(data.get("versions"), dict):
            raise EvoqError(f"{path} is not an evoq version list; move it away")
        versions.update(data["versions"])
    old_meta = local_dir / "evoq.json"
    if old_meta.is_file():
        old = read_json(old_meta, "evoq.json")
        if old.get("version") and old.get("content_hash"):
            versions.setdefault(old["version"], old["content_hash"])
    return versions


def _write_local(staging: Path, local_dir: Path, meta: dict) -> str:
    """Move the staged version into ``local_dir``: a version already written with the same
    data -> untouched; with other data -> refused (even after later versions); a folder evoq
    did not write -> refused."""
    versions: dict[str, str] = {}
    if local_dir.exists() and any(local_dir.iterdir()):
        if not (local_dir / "evoq.json").is_file():
            raise EvoqError(f"--local-dir {local_dir} is not empty and holds no evoq.json; "
                            "choose an empty or new folder")
        versions = _local_versions(local_dir)
    version, content = meta["version"], meta["content_hash"]
    if version in versions:
        if versions[version] == content:
            return "unchanged"
        raise EvoqError(f"{local_dir} already holds version {version} with other "
                        f"content ({versions[version]}, now {content}); a version never "
                        "changes: use a new --version")
    versions[version] = content
    write_json_atomic({"versions": versions}, staging / VERSIONS_FILE)
    local_dir.parent.mkdir(parents=True, exist_ok=True)
    old_dir = local_dir.with_name(f".{local_dir.name}.old-{os.getpid()}")
    if local_dir.exists():
        os.replace(local_dir, old_dir)
    os.replace(staging, local_dir)
    shutil.rmtree(old_dir, ignore_errors=True)
    return "written"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_staging(parent: Path, local_dir: Path | None = None) -> list[str]:
    """Remove what killed pushes left in ``parent``: staging folders whose lock no process
    holds (or, from an evoq without locks, older than this process); and the previous
    version a killed swap left beside ``local_dir`` (put back when ``local_dir`` is gone).
    Returns the names removed or restored."""
    import fcntl

    done = []
    for folder in sorted(parent.glob(STAGING_PREFIX + "*")):
        if not folder.is_dir() or folder.is_symlink():
            continue
        lock = folder / ".lock"
        if lock.is_file():
            with open(lock, "a") as fh:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # a running push holds it
                shutil.rmtree(folder, ignore_errors=True)
        elif folder.stat().st_mtime < PROCESS_START:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            continue
        done.append(folder.name)
    if local_dir is not None:
        for old in sorted(parent.glob(f".{local_dir.name}.old-*")):
            pid = old.name.rsplit("-", 1)[-1]
            if not pid.isdigit() or _pid_alive(int(pid)) or not old.is_dir():
                continue
            if not local_dir.exists():
                os.replace(old, local_dir)  # killed between the two renames: put it back
                log.warning("restored %s from %s (a push was killed mid-swap)", local_dir, old)
            else:
                shutil.rmtree(old, ignore_errors=True)
            done.append(old.name)
    if done:
        log.info("removed what killed pushes left in %s: %s", parent, ", ".join(done))
    return done


@contextmanager
def staging_dir(parent: Path | None, local_dir: Path | None = None):
    """A locked staging folder ``.evoq-push-<pid>-*`` in ``parent`` (the temp folder when
    None), removed on exit; stale ones of killed pushes are removed first."""
    import fcntl

    parent = Path(parent or tempfile.gettempdir())
    remove_stale_staging(parent, local_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=parent))
    try:
        with open(tmp / ".lock", "a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                log.warning("cannot lock %s; a later push may remove it while in use", tmp)
            yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- the Hub -----------------------------------------------------------------------------

def _transient_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for mod in ("httpx2", "httpx"):
        try:
            errors.append(__import__(mod).TransportError)
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def _is_transient(exc: BaseException) -> bool:
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(exc, HfHubHTTPError):
        status = getattr(exc.response, "status_code", None)
        return status in (408, 409, 412, 429, 500, 502, 503, 504)
    return isinstance(exc, _transient_errors())


def resolve_token(endpoint: str, token: str | None) -> str | None:
    """HF_TOKEN or the saved login; a non-loopback endpoint without one is an error."""
    from huggingface_hub import get_token

    token = token or get_token()
    if not token and urlsplit(endpoint).hostname not in LOOPBACK_HOSTS:
        raise EvoqError(f"no Hugging Face token for {endpoint}: set HF_TOKEN or run "
                        "`hf auth login` (a write token is needed to push)")
    return token


def _remote_meta(api, repo_id: str, revision: str, cache: Path) -> dict | None:
    from huggingface_hub.errors import EntryNotFoundError

    try:
        path = api.hf_hub_download(repo_id, "evoq.json", repo_type="dataset",
                                   revision=revision, cache_dir=cache)
    except EntryNotFoundError:
        return None
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _sync_once(api, folder: Path, repo_id: str, version: str, meta: dict, private: bool,
               cache: Path) -> dict:
    """One idempotent attempt: create the repo, commit the version (unless main already
    holds it), tag it. Safe to repeat after any failure."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    refs = api.list_repo_refs(repo_id, repo_type="dataset")
    tags = {t.name: t.target_commit for t in refs.tags}
    if version in tags:
        remote = _remote_meta(api, repo_id, tags[version], cache) or {}
        if remote.get("content_hash") == meta["content_hash"]:
            return {"status": "unchanged", "commit": tags[version]}
        raise EvoqError(
            f"version {version} of {repo_id} already exists with other content "
            f"({remote.get('content_hash', 'not made by evoq')} vs {meta['content_hash']}); "
            "a published version never changes: push under a new --version")
    main = next((b.target_commit for b in refs.branches if b.name == "main"), None)
    remote = _remote_meta(api, repo_id, main, cache) if main else None
    if remote and (remote.get("content_hash"), remote.get("version")) == (
            meta["content_hash"], version):
        commit = main  # an earlier run committed this version but did not tag it
    else:
        local = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
        existing = set(api.list_repo_files(repo_id, repo_type="dataset", revision=main)) if main \
            else set()
        ops = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(folder / p))
               for p in sorted(local)]
        ops += [CommitOperationDelete(path_in_repo=p)
                for p in sorted(existing - local - {".gitattributes"})]
        info = api.create_commit(repo_id, ops, repo_type="dataset", revision="main",
                                 parent_commit=main,
                                 commit_message=f"evoq dataset version {version}",
                                 commit_description=f"content {meta['content_hash']}")
        commit = info.oid
    api.create_tag(repo_id, tag=version, revision=commit, repo_type="dataset",
                   tag_message=f"evoq dataset version {version}")
    return {"status": "published", "commit": commit}


def upload(folder: Path, repo_id: str, version: str, meta: dict, *, endpoint: str,
           token: str | None, private: bool) -> dict:
    """Publish the staged folder as one commit + tag, retrying transient failures."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=token)
    cache = folder.parent / "hub-cache"
    last: BaseException | None = None
    for attempt in range(RETRIES):
        try:
            return _sync_once(api, folder, repo_id, version, meta, private, cache)
        except EvoqError:
            raise
        except Exception as exc:  # noqa: BLE001 - classified right below
            status = getattr(getattr(exc, "response", None), "status_code", None)
            if status in (401, 403):
                raise EvoqError(f"{endpoint} refused the token ({status}): check that HF_TOKEN "
                                f"or the saved login has write access to {repo_id}") from exc
            if not _is_transient(exc):
                raise EvoqError(f"pushing to {endpoint} failed: {_describe(exc)}") from exc
            last = exc
            wait = BACKOFF_S * 2**attempt
            log.warning("push attempt %d/%d failed (%s); retrying in %.1f s", attempt + 1,
                        RETRIES, _describe(exc), wait)
            if attempt + 1 < RETRIES:
                time.sleep(wait)
    raise EvoqError(f"pushing to {endpoint} failed after {RETRIES} attempts "
                    f"({_describe(last)}); version {version} was not tagged: rerun the same "
                    "command to resume (uploaded files are not sent again)")


def _describe(exc: BaseException | None) -> str:
    text = " ".join(str(exc).split())[:200]
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__


# --- the stage ---------------------------------------------------------------------------

def make_redactor(src: dict, votes_dir: Path | None, pool_label: str | None) -> Redactor:
    """The path rules of this push (see :mod:`evoq_data.publish.redact`)."""
    prefs, images = src["preferences"], src["images"]
    paths = images.column("image_path").to_pylist()
    ids = images.column("image_id").to_pylist()
    for side in "ab":
        paths += prefs.column(f"image_{side}_path").to_pylist()
        ids += prefs.column(f"image_{side}_id").to_pylist()
    aggregate = src["manifest"]
    vote = aggregate.get("votes") or {}
    pairs = pairs_manifest(aggregate)
    label = pool_label or pool_hash(ids)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", label):
        raise EvoqError(f"malformed --pool-label {label!r}: letters, digits, '.', '_', '-'")
    names = {}
    model = str(vote.get("model") or "")
    if model.startswith(("/", "~", "./", "../")):
        names[model] = Path(model.rstrip("/")).name or "model"
    for value, name in ((aggregate.get("votes_dir"), "votes"), (votes_dir, "votes"),
                        (src["dir"], "prefs"), (vote.get("pairs_file"), None)):
        if value:
            names[str(value)] = name or Path(str(value)).name
    if vote.get("pairs_file"):
        names.setdefault(str(Path(vote["pairs_file"]).parent), ".")
    return Redactor(pool_root([p for p in paths if p], pairs.get("source")), label, names)


def run_push(prefs: str | Path, repo_id: str, version: str, *,
             local_dir: str | Path | None = None, endpoint: str | None = None,
             private: bool = False, license: str = "apache-2.0", embed_images: bool = True,
             include_votes: bool = False, token: str | None = None, quiet: bool = False,
             votes: str | Path | None = None, keep_local_paths: bool = False,
             pool_label: str | None = None, images: str | None = None,
             exports=None) -> dict:
    """The ``evoq-data push`` stage. Returns a summary (status, commit or folder, hash).
    ``images`` is the layout (:mod:`evoq_data.publish.layouts`; ``embed_images=False`` is
    ``none``), ``exports`` the extra configs (:func:`evoq_data.publish.exports.parse_exports`)."""
    from evoq_data.publish.exports import parse_exports
    from evoq_data.publish.layouts import resolve_layout

    layout, exports = resolve_layout(images, embed_images), parse_exports(exports)
    if not isinstance(repo_id, str) or not REPO_ID_RE.fullmatch(repo_id) or ".." in repo_id \
            or "--" in repo_id or repo_id.endswith((".", "-", ".git")):
        raise EvoqError(f"malformed repo id {repo_id!r}: expected OWNER/NAME "
                        "(letters, digits, '.', '_', '-')")
    problem = version_problem(version if isinstance(version, str) else "")
    if problem:
        raise EvoqError(f"malformed version {version!r}: {problem}; use a tag name such as v1 "
                        "or 2026.11")
    if not re.fullmatch(r"[a-z0-9][a-z0-9.+-]*", license or ""):
        raise EvoqError(f"malformed license {license!r}: use a Hub license id such as "
                        "apache-2.0, mit or cc-by-4.0")
    if keep_local_paths and pool_label:
        raise EvoqError("--pool-label names the pool instead of its local path; it does not "
                        "go with --keep-local-paths")
    src = load_prefs_dir(prefs)
    votes_dir = None
    if include_votes:
        named = str(votes or src["manifest"].get("votes_dir") or "")
        if not named or not Path(named).is_dir():
            raise EvoqError("--include-votes: the votes folder "
                            f"{named or '(not named by the aggregate manifest)'} is not there; "
                            "pass --votes VOTES_DIR")
        votes_dir = Path(named)
    redact = None if keep_local_paths else make_redactor(src, votes_dir, pool_label)
    hub_endpoint = None
    if local_dir is None:
        from huggingface_hub import constants

        hub_endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
        if urlsplit(hub_endpoint).scheme not in ("http", "https"):
            raise EvoqError(f"malformed --endpoint {hub_endpoint!r}: expected an http(s) URL")
        if constants.is_offline_mode():
            raise EvoqError("HF_HUB_OFFLINE is set: unset it to push, or use --local-dir")
        token = resolve_token(hub_endpoint, token)
    started = time.perf_counter()
    parent = None
    if local_dir:
        if Path(local_dir).exists() and not Path(local_dir).is_dir():
            raise EvoqError(f"--local-dir {local_dir} is an existing file; give a folder")
        parent = make_output_dir(Path(local_dir).resolve().parent, "--local-dir parent")
    with staging_dir(parent, Path(local_dir).resolve() if local_dir else None) as tmp:
        staging = Path(tmp) / "repo"
        staging.mkdir()
        meta = build_repo_folder(src, staging, repo_id, version, license=license,
                                 embed_images=embed_images, include_votes=include_votes,
                                 votes_dir=votes_dir, quiet=quiet, redact=redact,
                                 layout=layout, exports=exports)
        if redact is not None:
            leaks = find_leaks(staging, redact.forbidden)
            if leaks:
                raise EvoqError(f"the built dataset still names local paths ({'; '.join(leaks[:3])}"
                                f"{' and more' if len(leaks) > 3 else ''}); nothing was "
                                "published: report this, or publish them on purpose with "
                                "--keep-local-paths")
        summary = {"repo_id": repo_id, "version": version,
                   "content_hash": meta["content_hash"],
                   "rows": {k: v["rows"] for k, v in meta["configs"].items()},
                   "files": len(meta["files"]) + 2, "paths": meta["paths"],
                   "images": layout, **({"exports": meta["exports"]} if "exports" in meta else {})}
        if local_dir is not None:
            summary["status"] = _write_local(staging, Path(local_dir), meta)
            summary["local_dir"] = str(local_dir)
        else:
            result = upload(staging, repo_id, version, meta, endpoint=hub_endpoint,
                            token=token, private=private)
            summary.update(result, endpoint=hub_endpoint)
    summary["seconds"] = round(time.perf_counter() - started, 3)
    log.info("push %s@%s: %s", repo_id, version, summary["status"])
    return summary
