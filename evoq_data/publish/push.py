"""``evoq-data push``: a PREFS_DIR becomes a versioned dataset repository (Hub or local folder).

One version is one commit holding the whole repository, tagged VERSION. This module runs the
stage; each job has its own module: the names (:mod:`evoq_data.core.names`), the repository
folder (:mod:`evoq_data.publish.repo`), the published paths
(:mod:`evoq_data.publish.redact`), the staging folder (:mod:`evoq_data.publish.staging`),
the destination (:mod:`evoq_data.publish.local` for ``--local-dir``,
:mod:`evoq_data.publish.hub` for the Hub). A version is identified by the content hash of
its data, so pushing the same data again makes no commit, and other data under an existing
tag is refused.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from urllib.parse import urlsplit

from evoq_data.core.errors import EvoqError
from evoq_data.core.io import make_output_dir
from evoq_data.core.names import check_license, check_repo_id, check_version
from evoq_data.publish.hub import resolve_token, upload
from evoq_data.publish.leaks import find_leaks
from evoq_data.publish.local import write_local
from evoq_data.publish.redact import make_redactor
from evoq_data.publish.repo import build_repo_folder, load_prefs_dir
from evoq_data.publish.staging import staging_dir

log = logging.getLogger(__name__)


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
    check_repo_id(repo_id)
    check_version(version)
    check_license(license)
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
            leaks = find_leaks(staging, redact.forbidden, redact.image_paths)
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
            summary["status"] = write_local(staging, Path(local_dir), meta)
            summary["local_dir"] = str(local_dir)
        else:
            result = upload(staging, repo_id, version, meta, endpoint=hub_endpoint,
                            token=token, private=private)
            summary.update(result, endpoint=hub_endpoint)
    summary["seconds"] = round(time.perf_counter() - started, 3)
    log.info("push %s@%s: %s", repo_id, version, summary["status"])
    return summary
