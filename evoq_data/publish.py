"""``evoq-data push``: a PREFS_DIR becomes a versioned dataset repository (Hub or local folder).

Repository layout (one version = one commit holding all of it, tagged VERSION)::

    README.md                               card (cards/dataset_card.md.j2), configs in its YAML
    evoq.json                               aggregate manifest, content hash, file hashes
    preferences/train-00000-of-0000N.parquet   preferences.parquet + image_a / image_b (Image)
    images/train-00000-of-0000N.parquet        images.parquet + image (Image), each image once
    votes/train-00000-of-0000N.parquet         raw votes (only with --include-votes)
    assets/agreement_hist.png, assets/position_bias.png

A version is identified by the content hash of its data (rows and image bytes, not Parquet
encoding), so pushing the same data again is a no-op and different data under an existing tag
is refused. Every image is read, hashed against its image id and decoded before anything is
written or uploaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.parquet as pq

from . import __version__
from .errors import EvoqError
from .schemas import VOTES_COLUMNS, check_columns

log = logging.getLogger(__name__)

PREFS_COLUMNS = (
    "pair_id", "image_a_id", "image_a_path", "image_b_id", "image_b_path", "votes_a",
    "votes_b", "invalid_votes", "total_votes", "p_star", "vote_fraction_a", "agreement",
    "wilson_low", "wilson_high", "votes_first_shown",
)
IMAGES_COLUMNS = ("image_id", "image_path", "wins", "losses", "ties", "comparisons",
                  "win_rate", "bt_score")
PLOTS = ("agreement_hist.png", "position_bias.png")
REPO_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
SHARD_BYTES = 400 * 2**20  # target size of one Parquet data file
VOTES_SHARD_ROWS = 500_000
RETRIES = 5  # whole-push attempts on transient failures
BACKOFF_S = 2.0  # first wait; doubles each attempt
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


# --- reading and validating the PREFS_DIR ------------------------------------------------

def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise EvoqError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise EvoqError(f"{what} {path} is not readable JSON ({exc})") from exc


def load_prefs_dir(prefs: str | Path) -> dict:
    """Read and check what ``evoq-data aggregate`` wrote; fail with one line otherwise."""
    prefs = Path(prefs)
    if not prefs.is_dir():
        raise EvoqError(f"PREFS_DIR not found: {prefs}")
    if not (prefs / "preferences.parquet").is_file():
        raise EvoqError(f"{prefs} has no preferences.parquet; make it with `evoq-data aggregate`")
    check_columns(prefs / "preferences.parquet", PREFS_COLUMNS, "preferences")
    check_columns(prefs / "images.parquet", IMAGES_COLUMNS, "images")
    manifest = _read_json(prefs / "manifest.json", "aggregate manifest")
    if manifest.get("stage") != "aggregate" or not isinstance(manifest.get("votes"), dict):
        raise EvoqError(f"{prefs / 'manifest.json'} is not an aggregate manifest "
                        "(needs stage 'aggregate' and the vote run under 'votes')")
    preferences = pq.read_table(prefs / "preferences.parquet")
    if preferences.num_rows == 0:
        raise EvoqError(f"{prefs / 'preferences.parquet'} has no rows: nothing to publish")
    stats_md = prefs / "stats.md"
    return {
        "dir": prefs, "manifest": manifest, "preferences": preferences,
        "images": pq.read_table(prefs / "images.parquet"),
        "stats": _read_json(prefs / "stats.json", "stats") if (prefs / "stats.json").is_file()
        else {},
        "stats_md": stats_md.read_text(encoding="utf-8") if stats_md.is_file() else "",
        "plots": [prefs / p for p in PLOTS if (prefs / p).is_file()],
    }


def _resolve(path: str, prefs_dir: Path) -> Path:
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    return prefs_dir / p


def check_images(paths: dict[str, str], prefs_dir: Path, quiet: bool = True) -> dict[str, Path]:
    """Every image must exist, match its id (sha256 of its bytes) and decode; else one line
    naming the bad files. Returns image_id -> file path."""
    from tqdm.auto import tqdm

    from .pool import check_image_bytes

    resolved, missing, bad = {}, [], []
    for image_id, path in tqdm(sorted(paths.items()), desc="checking images", unit="img",
                               disable=quiet, dynamic_ncols=True):
        p = _resolve(path, prefs_dir)
        try:
            data = p.read_bytes()
        except OSError:
            missing.append(path)
            continue
        try:
            check_image_bytes(data)
        except ValueError as exc:
            bad.append(f"{path} ({exc})")
            continue
        if re.fullmatch(r"[0-9a-f]{64}", image_id) and hashlib.sha256(data).hexdigest() != image_id:
            bad.append(f"{path} (its bytes changed since voting: sha256 differs from its id)")
            continue
        resolved[image_id] = p

    def named(items):
        return ", ".join(items[:5]) + (f" and {len(items) - 5} more" if len(items) > 5 else "")

    if missing:
        raise EvoqError(f"{len(missing)} image(s) missing from disk: {named(missing)}; "
                        "restore them or push with --no-embed-images")
    if bad:
        raise EvoqError(f"{len(bad)} listed path(s) are not usable images: {named(bad)}")
    return resolved


# --- the repository folder ---------------------------------------------------------------

def _image_struct(image_id: str, path: Path) -> dict:
    return {"bytes": path.read_bytes(), "path": image_id + path.suffix.lower()}


def _with_features(table: pa.Table, image_cols: dict[str, list], after: str) -> pa.Table:
    """Insert Image columns after column ``after`` and attach the `datasets` features."""
    import datasets

    names = list(table.column_names)
    pos = names.index(after) + 1
    features = datasets.Features.from_arrow_schema(table.schema)
    ordered = {}
    for name in names[:pos]:
        ordered[name] = features[name]
    for name in image_cols:
        ordered[name] = datasets.Image()
    for name in names[pos:]:
        ordered[name] = features[name]
    features = datasets.Features(ordered)
    image_type = features.arrow_schema.field(next(iter(image_cols))).type
    columns = [table.column(n) for n in names[:pos]]
    columns += [pa.array(v, type=image_type) for v in image_cols.values()]
    columns += [table.column(n) for n in names[pos:]]
    return pa.Table.from_arrays(columns, schema=features.arrow_schema)


def _hf_schema(table: pa.Table) -> pa.Table:
    import datasets

    features = datasets.Features.from_arrow_schema(table.schema)
    return table.cast(features.arrow_schema)


def _shards(n_rows: int, n_bytes: int, max_rows: int | None = None) -> list[tuple[int, int]]:
    n = max(1, -(-n_bytes // SHARD_BYTES))
    if max_rows:
        n = max(n, -(-n_rows // max_rows))
    n = min(n, max(1, n_rows))
    step = -(-n_rows // n)
    return [(s, min(step, n_rows - s)) for s in range(0, n_rows, step)] or [(0, 0)]


def _table_digest(table: pa.Table) -> str:
    """sha256 of a table's column names, types and values (bytes by their sha256),
    independent of how Parquet encodes them."""

    def plain(v):
        if isinstance(v, bytes):
            return "sha256:" + hashlib.sha256(v).hexdigest()
        return str(v)

    h = hashlib.sha256(json.dumps([[f.name, str(f.type)] for f in table.schema]).encode())
    for batch in table.to_batches(max_chunksize=4096):
        for row in batch.to_pylist():
            h.update(json.dumps(row, sort_keys=True, default=plain).encode() + b"\n")
    return h.hexdigest()


def _write_config(name: str, build, n_rows: int, n_bytes: int, folder: Path,
                  max_rows: int | None = None, row_group: int = 10_000) -> dict:
    """Write config ``name`` as shards; ``build(start, length)`` returns each shard's table."""
    shards = _shards(n_rows, n_bytes, max_rows)
    files, h = [], hashlib.sha256()
    for i, (start, length) in enumerate(shards):
        table = build(start, length)
        rel = f"{name}/train-{i:05d}-of-{len(shards):05d}.parquet"
        (folder / name).mkdir(parents=True, exist_ok=True)
        pq.write_table(table, folder / rel, compression="zstd", row_group_size=row_group)
        h.update(_table_digest(table).encode())
        files.append(rel)
    return {"rows": n_rows, "files": files, "sha256": h.hexdigest()}


def _votes_table(votes_dir: Path) -> pa.Table:
    shards = sorted(votes_dir.glob("votes-*.parquet"))
    if not shards:
        raise EvoqError(f"--include-votes: no votes-*.parquet shards in {votes_dir}")
    for shard in shards:
        check_columns(shard, VOTES_COLUMNS, "votes")
    table = pa.concat_tables(pq.read_table(s, columns=list(VOTES_COLUMNS)) for s in shards)
    return _hf_schema(table.sort_by([("pair_id", "ascending"), ("vote_index", "ascending")]))


def size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < limit:
            return name
    return "n>10M" if n >= 1_000_000_000 else "10M<n<100M"


def build_repo_folder(src: dict, folder: Path, repo_id: str, version: str, *,
                      license: str, embed_images: bool, include_votes: bool,
                      votes_dir: Path | None, quiet: bool) -> dict:
    """Write the whole dataset repository for one version into ``folder``; return evoq.json."""
    from .cardgen import render_card

    prefs, images = src["preferences"], src["images"]
    configs: dict[str, dict] = {}
    bytes_unique = bytes_stored = 0
    if embed_images:
        paths = dict(zip(images.column("image_id").to_pylist(),
                         images.column("image_path").to_pylist(), strict=True))
        for side in ("a", "b"):
            paths.update(zip(prefs.column(f"image_{side}_id").to_pylist(),
                             prefs.column(f"image_{side}_path").to_pylist(), strict=True))
        files = check_images(paths, src["dir"], quiet)
        sizes = {i: p.stat().st_size for i, p in files.items()}
        bytes_unique = sum(sizes.values())
        pref_bytes = sum(sizes[i] for s in "ab" for i in prefs.column(f"image_{s}_id").to_pylist())
        bytes_stored = pref_bytes + sum(sizes[i] for i in images.column("image_id").to_pylist())

        def build_prefs(start, length):
            part = prefs.slice(start, length)
            cols = {f"image_{s}": [_image_struct(i, files[i]) for i in
                                   part.column(f"image_{s}_id").to_pylist()] for s in "ab"}
            return _with_features(part, cols, after="pair_id")

        def build_images(start, length):
            part = images.slice(start, length)
            col = {"image": [_image_struct(i, files[i]) for i in
                             part.column("image_id").to_pylist()]}
            return _with_features(part, col, after="image_id")

        configs["preferences"] = _write_config("preferences", build_prefs, prefs.num_rows,
                                               pref_bytes, folder, row_group=100)
        configs["images"] = _write_config("images", build_images, images.num_rows,
                                          bytes_stored - pref_bytes, folder, row_group=100)
    else:
        configs["preferences"] = _write_config(
            "preferences", lambda s, n: _hf_schema(prefs.slice(s, n)), prefs.num_rows,
            prefs.nbytes, folder)
        configs["images"] = _write_config(
            "images", lambda s, n: _hf_schema(images.slice(s, n)), images.num_rows,
            images.nbytes, folder)
    if include_votes:
        votes = _votes_table(votes_dir)
        configs["votes"] = _write_config("votes", lambda s, n: votes.slice(s, n),
                                         votes.num_rows, votes.nbytes, folder, VOTES_SHARD_ROWS)
    content = hashlib.sha256(json.dumps({k: v["sha256"] for k, v in configs.items()},
                                        sort_keys=True).encode()).hexdigest()
    # File names carry the content hash: `datasets` caches a local folder by its data-file
    # patterns, so a folder re-written with other content must not match the old patterns.
    for name, conf in configs.items():
        renamed = []
        for rel in conf["files"]:
            new_rel = rel.replace("/train-", f"/train-{content[:12]}-", 1)
            os.replace(folder / rel, folder / new_rel)
            renamed.append(new_rel)
        conf["files"], conf["pattern"] = renamed, f"{name}/train-{content[:12]}-*.parquet"
    plots = []
    for plot in src["plots"]:
        (folder / "assets").mkdir(exist_ok=True)
        shutil.copyfile(plot, folder / "assets" / plot.name)
        plots.append(f"assets/{plot.name}")
    meta = {
        "evoq_version": __version__, "repo_id": repo_id, "version": version,
        "content_hash": f"sha256:{content}", "created_at": datetime.now(UTC).isoformat(),
        "embed_images": embed_images, "include_votes": include_votes, "license": license,
        "configs": configs, "image_bytes": {"unique": bytes_unique, "stored": bytes_stored},
        "aggregate": src["manifest"], "pairs": _pairs_manifest(src["manifest"]),
        "stats": src["stats"],
    }
    card = render_card(meta, stats_md=src["stats_md"], plots=plots,
                       size_category=size_category(prefs.num_rows))
    meta["files"] = {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*")) if p.is_file()
    }
    (folder / "evoq.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    (folder / "README.md").write_text(card, encoding="utf-8")
    return meta


def _pairs_manifest(aggregate: dict) -> dict:
    """The pairs stage's manifest (source pool, image count), when it is still on disk."""
    pairs_file = aggregate.get("votes", {}).get("pairs_file")
    if not pairs_file:
        return {}
    path = Path(pairs_file)
    path = path.with_name(path.stem + ".manifest.json")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


# --- local folder ------------------------------------------------------------------------

def _write_local(staging: Path, local_dir: Path, meta: dict) -> str:
    """Move the staged version into ``local_dir``: same data -> untouched; same version with
    other data -> refused; a folder evoq did not write -> refused."""
    old_meta_path = local_dir / "evoq.json"
    if local_dir.exists() and any(local_dir.iterdir()):
        if not old_meta_path.is_file():
            raise EvoqError(f"--local-dir {local_dir} is not empty and holds no evoq.json; "
                            "choose an empty or new folder")
        old = _read_json(old_meta_path, "evoq.json")
        if old.get("content_hash") == meta["content_hash"]:
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
    if remote and remote.get("content_hash") == meta["content_hash"]:
        commit = main  # an earlier run committed this content but did not tag it
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
    from huggingface_hub import HfApi, constants

    if constants.is_offline_mode():
        raise EvoqError("HF_HUB_OFFLINE is set: unset it to push, or use --local-dir")
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
        token = resolve_token(hub_endpoint, token)
    started = time.perf_counter()
    parent = Path(local_dir).resolve().parent if local_dir else None
    if parent:
        parent.mkdir(parents=True, exist_ok=True)
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
