"""``push`` to the Hugging Face Hub: one commit and one tag per version, with retries.

Every Hub step is idempotent (the repo, a commit already on main with this content, the
tag), so a rerun after any interruption converges to one complete commit and tag; LFS files
already uploaded are not sent again. Transient failures (connection errors, 408/409/412/
429/5xx) are retried with exponential backoff; a refused token or any other error is one
line. The token comes from HF_TOKEN or the saved login and is never printed, logged or
written.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from urllib.parse import urlsplit

from evoq_data.core.errors import EvoqError
from evoq_data.core.io import read_json

log = logging.getLogger(__name__)

RETRIES = 5  # whole-push attempts on transient failures
BACKOFF_S = 2.0  # first wait; doubles each attempt
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


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
        return read_json(Path(path), f"evoq.json of {repo_id}@{revision}")
    except EvoqError:
        return None  # not an evoq.json: the repository is treated as one evoq did not write


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
