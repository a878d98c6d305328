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
from pathlib import Path
from urllib.parse import urlsplit

from evoq_data.core.errors import EvoqError
from evoq_data.core.io import make_output_dir
from evoq_data.publish.repo import build_repo_folder, load_prefs_dir, read_json

log = logging.getLogger(__name__)

REPO_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
RETRIES = 5  # whole-push attempts on transient failures
BACKOFF_S = 2.0  # first wait; doubles each attempt
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


# --- local folder ------------------------------------------------------------------------

def _write_local(staging: Path, local_dir: Path, meta: dict) -> str:
    """Move the staged version into ``local_dir``: same data -> untouched; same version with
    other data -> refused; a folder evoq did not write -> refused."""
    old_meta_path = local_dir / "evoq.json"
    if local_dir.exists() and any(local_dir.iterdir()):
        if not old_meta_path.is_file():
            raise EvoqError(f"--local-dir {local_dir} is not empty and holds no evoq.json; "
                            "choose an empty or new folder")
        old = read_json(old_meta_path, "evoq.json")
        if old.get("content_hash") == meta["content_hash"] and old.get("version") == meta["version"]:
            return "unchanged"
        if old.get("version") == meta["version"]:
            raise EvoqError(f"{local_dir} already holds version {meta['version']} with other "
                            f"content ({old.get('content_hash')}); use a new --version")
    local_dir.parent.mkdir(parents=True, exist_ok=True)
    old_dir = local_dir.with_name(f".{local_dir.name}.old-{os.getpid()}")
    if local_dir.exists():
        os.replace(local_dir, old_dir)
    os.replace(staging, local_dir)
    shutil.rmtree(old_dir, ignore_errors=True)
    return "written"


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

def run_push(prefs: str | Path, repo_id: str, version: str, *,
             local_dir: str | Path | None = None, endpoint: str | None = None,
             private: bool = False, license: str = "apache-2.0", embed_images: bool = True,
             include_votes: bool = False, token: str | None = None, quiet: bool = False,
             votes: str | Path | None = None) -> dict:
    """The ``evoq-data push`` stage. Returns a summary (status, commit or folder, hash)."""
    if not isinstance(repo_id, str) or not REPO_ID_RE.fullmatch(repo_id) or ".." in repo_id \
            or "--" in repo_id or repo_id.endswith((".", "-", ".git")):
        raise EvoqError(f"malformed repo id {repo_id!r}: expected OWNER/NAME "
                        "(letters, digits, '.', '_', '-')")
    if not VERSION_RE.fullmatch(version or "") or version == "main":
        raise EvoqError(f"malformed version {version!r}: use a tag name such as v1 or 2026.11 "
                        "(letters, digits, '.', '_', '-'; not 'main')")
    if not re.fullmatch(r"[a-z0-9][a-z0-9.+-]*", license or ""):
        raise EvoqError(f"malformed license {license!r}: use a Hub license id such as "
                        "apache-2.0, mit or cc-by-4.0")
    src = load_prefs_dir(prefs)
    votes_dir = None
    if include_votes:
        named = str(votes or src["manifest"].get("votes_dir") or "")
        if not named or not Path(named).is_dir():
            raise EvoqError("--include-votes: the votes folder "
                            f"{named or '(not named by the aggregate manifest)'} is not there; "
                            "pass --votes VOTES_DIR")
        votes_dir = Path(named)
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
    with tempfile.TemporaryDirectory(prefix=".evoq-push-", dir=parent) as tmp:
        staging = Path(tmp) / "repo"
        staging.mkdir()
        meta = build_repo_folder(src, staging, repo_id, version, license=license,
                                 embed_images=embed_images, include_votes=include_votes,
                                 votes_dir=votes_dir, quiet=quiet)
        summary = {"repo_id": repo_id, "version": version,
                   "content_hash": meta["content_hash"],
                   "rows": {k: v["rows"] for k, v in meta["configs"].items()},
                   "files": len(meta["files"]) + 2}
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
