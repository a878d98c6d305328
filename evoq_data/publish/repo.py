"""The dataset repository folder of one version, built from a PREFS_DIR.

Layout::

    README.md                                        card (evoq_data.publish.card)
    evoq.json                                        aggregate manifest, content hash, file hashes
    preferences/train-<hash12>-00000-of-0000N.parquet   preferences + image_a / image_b (Image)
    images/train-<hash12>-00000-of-0000N.parquet        images + image (Image), each image once
    votes/train-<hash12>-00000-of-0000N.parquet         raw votes (only with --include-votes)
    assets/agreement_hist.png, assets/position_bias.png

The content hash covers every config's column names, types and values (image bytes by their
sha256), not the Parquet encoding, so the same data gives the same hash with any pyarrow.
Every image is read, checked against its id (the sha256 of its bytes) and decoded before
anything is written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from evoq_data import __version__
from evoq_data.core.errors import EvoqError
from evoq_data.core.io import read_json, write_json_atomic, write_text_atomic
from evoq_data.core.manifests import manifest_path, read_manifest
from evoq_data.core.schemas import (
    VOTES_COLUMNS,
    VOTES_COLUMNS_ADDED_IN_2,
    VOTES_SCHEMA,
    check_columns,
)
from evoq_data.publish.tables import (
    hf_schema,
    image_struct,
    shard_ranges,
    with_features,
    write_config,
)

log = logging.getLogger(__name__)

PREFS_COLUMNS = (
    "pair_id", "image_a_id", "image_a_path", "image_b_id", "image_b_path", "votes_a",
    "votes_b", "invalid_votes", "total_votes", "p_star", "vote_fraction_a", "agreement",
    "wilson_low", "wilson_high", "votes_first_shown",
)
IMAGES_COLUMNS = ("image_id", "image_path", "wins", "losses", "ties", "comparisons",
                  "win_rate", "bt_score")
PLOTS = ("agreement_hist.png", "position_bias.png")
VOTES_SHARD_ROWS = 500_000


# --- reading and validating the PREFS_DIR ------------------------------------------------

def load_prefs_dir(prefs: str | Path) -> dict:
    """Read and check what ``evoq-data aggregate`` wrote; fail with one line otherwise."""
    prefs = Path(prefs)
    if not prefs.is_dir():
        raise EvoqError(f"PREFS_DIR not found: {prefs}")
    if not (prefs / "preferences.parquet").is_file():
        raise EvoqError(f"{prefs} has no preferences.parquet; make it with `evoq-data aggregate`")
    check_columns(prefs / "preferences.parquet", PREFS_COLUMNS, "preferences")
    check_columns(prefs / "images.parquet", IMAGES_COLUMNS, "images")
    manifest = read_manifest(prefs, "aggregate manifest")
    if manifest.get("stage") != "aggregate" or not isinstance(manifest.get("votes"), dict):
        raise EvoqError(f"{manifest_path(prefs)} is not an aggregate manifest "
                        "(needs stage 'aggregate' and the vote run under 'votes')")
    preferences = pq.read_table(prefs / "preferences.parquet")
    if preferences.num_rows == 0:
        raise EvoqError(f"{prefs / 'preferences.parquet'} has no rows: nothing to publish")
    if preferences.column("p_star").null_count == preferences.num_rows:
        raise EvoqError(f"{prefs / 'preferences.parquet'}: all {preferences.num_rows} pairs "
                        "have p_star null (not one valid vote): nothing to publish; look at "
                        "the parse failures in stats.md (the judge's answers did not parse)")
    stats_md = prefs / "stats.md"
    return {
        "dir": prefs, "manifest": manifest, "preferences": preferences,
        "images": pq.read_table(prefs / "images.parquet"),
        "stats": read_json(prefs / "stats.json", "stats", missing_ok=True) or {},
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

    from evoq_data.images.pool import check_image_bytes

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

LEGACY_VOTES_COLUMNS = tuple(c for c in VOTES_COLUMNS if c not in VOTES_COLUMNS_ADDED_IN_2)


def _upgrade_legacy_votes(table: pa.Table) -> pa.Table:
    """A schema-1 vote table in the current schema: a fixed-K sampled run (votes_planned =
    the pair's vote count, stop_reason 'fixed', no probabilities)."""
    counts = table.group_by("pair_id").aggregate([("vote_index", "count")])
    per_pair = dict(zip(counts.column("pair_id").to_pylist(),
                        counts.column("vote_index_count").to_pylist(), strict=True))
    extra = {
        "votes_planned": pa.array([per_pair[p] for p in table.column("pair_id").to_pylist()],
                                  pa.int32()),
        "stop_reason": pa.array(["fixed"] * table.num_rows, pa.string()),
        "prob_0": pa.nulls(table.num_rows, pa.float64()),
        "prob_1": pa.nulls(table.num_rows, pa.float64()),
    }
    return pa.table({name: table.column(name) if name in table.column_names else extra[name]
                     for name in VOTES_COLUMNS}, schema=VOTES_SCHEMA)


def _vote_shards(votes_dir: Path, redact=None) -> list[Callable[[], Iterable[pa.Table]]]:
    """The raw vote files, in name order, grouped into shards of about VOTES_SHARD_ROWS rows
    and streamed file by file (the votes never sit in memory all at once)."""
    files = sorted(votes_dir.glob("votes-*.parquet"))
    if not files:
        raise EvoqError(f"--include-votes: no votes-*.parquet shards in {votes_dir}")
    groups: list[list[Path]] = [[]]
    rows = 0
    for f in files:
        check_columns(f, LEGACY_VOTES_COLUMNS, "votes")
        n = pq.ParquetFile(f).metadata.num_rows
        if groups[-1] and rows + n > VOTES_SHARD_ROWS:
            groups.append([])
            rows = 0
        groups[-1].append(f)
        rows += n

    def read(f):
        present = set(pq.read_schema(f).names)
        table = pq.read_table(f, columns=[c for c in VOTES_COLUMNS if c in present])
        if len(present & set(VOTES_COLUMNS)) < len(VOTES_COLUMNS):  # a schema-1 shard
            table = _upgrade_legacy_votes(table)
        return hf_schema(redact.table(table) if redact is not None else table)

    def stream(group):
        return lambda: (read(f) for f in group)

    return [stream(g) for g in groups]


def size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < limit:
            return name
    return "n>10M" if n >= 1_000_000_000 else "10M<n<100M"


def build_repo_folder(src: dict, folder: Path, repo_id: str, version: str, *,
                      license: str, embed_images: bool, include_votes: bool,
                      votes_dir: Path | None, quiet: bool, redact=None,
                      layout: str | None = None, exports=None) -> dict:
    """Write the whole dataset repository for one version into ``folder``; return evoq.json.
    With ``redact`` (a :class:`~evoq_data.publish.redact.Redactor`) every local path is
    published relative to the pool or by a short name; without it, as it is on disk."""
    from evoq_data.publish.card import render_card

    prefs, images = src["preferences"], src["images"]
    keep = (lambda t: t) if redact is None else redact.table
    value = (lambda v: v) if redact is None else redact.value
    configs: dict[str, dict] = {}
    bytes_unique = bytes_stored = 0
    layout = layout or ("embed" if embed_images else "none")  # evoq_data.publish.layouts
    files: dict[str, Path] = {}
    if layout != "none":
        paths = dict(zip(images.column("image_id").to_pylist(),
                         images.column("image_path").to_pylist(), strict=True))
        for side in ("a", "b"):
            paths.update(zip(prefs.column(f"image_{side}_id").to_pylist(),
                             prefs.column(f"image_{side}_path").to_pylist(), strict=True))
        files = check_images(paths, src["dir"], quiet)
        sizes = {i: p.stat().st_size for i, p in files.items()}
        bytes_unique = sum(sizes.values())
        pref_bytes = sum(sizes[i] for s in "ab" for i in prefs.column(f"image_{s}_id").to_pylist())
        if layout == "once":
            from evoq_data.publish.layouts import check_once_covers

            pref_bytes = check_once_covers(prefs, images)
        bytes_stored = pref_bytes + sum(sizes[i] for i in images.column("image_id").to_pylist())

        def build_prefs(start, length):
            part = keep(prefs.slice(start, length))
            cols = {f"image_{s}": [image_struct(i, files[i]) for i in
                                   part.column(f"image_{s}_id").to_pylist()] for s in "ab"}
            return [with_features(part, cols, after="pair_id")]

        def build_images(start, length):
            part = keep(images.slice(start, length))
            col = {"image": [image_struct(i, files[i]) for i in
                             part.column("image_id").to_pylist()]}
            return [with_features(part, col, after="image_id")]

        configs["preferences"] = write_config(
            "preferences", [lambda s=s, n=n: build_prefs(s, n)
                            for s, n in shard_ranges(prefs.num_rows, pref_bytes)], folder, 100) \
            if layout == "embed" else write_config(
                "preferences", [lambda: [hf_schema(keep(prefs))]], folder)
        configs["images"] = write_config(
            "images", [lambda s=s, n=n: build_images(s, n)
                       for s, n in shard_ranges(images.num_rows, bytes_stored - pref_bytes)],
            folder, 100)
    else:
        for name, table in (("preferences", prefs), ("images", images)):
            configs[name] = write_config(
                name, [lambda t=table: [hf_schema(keep(t))]], folder)
    if include_votes:
        configs["votes"] = write_config("votes", _vote_shards(votes_dir, redact), folder)
    export_summary = None
    if exports:
        from evoq_data.publish.exports import write_exports

        export_summary = write_exports(src, folder, exports, layout=layout, files=files,
                                       keep=keep, configs=configs)
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
        "embed_images": layout != "none", "images": layout, "include_votes": include_votes,
        "license": license, **({"exports": export_summary} if export_summary else {}),
        "configs": configs, "image_bytes": {"unique": bytes_unique, "stored": bytes_stored},
        "paths": {"local": True} if redact is None else redact.published_as,
        "aggregate": value(src["manifest"]), "pairs": value(pairs_manifest(src["manifest"])),
        "stats": value(src["stats"]),
    }
    stats_md = src["stats_md"] if redact is None else redact.text(src["stats_md"])
    card = render_card(meta, stats_md=stats_md, plots=plots,
                       size_category=size_category(prefs.num_rows))
    meta["files"] = {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*")) if p.is_file()
    }
    write_json_atomic(meta, folder / "evoq.json")
    write_text_atomic(card, folder / "README.md")
    return meta


def pairs_manifest(aggregate: dict) -> dict:
    """The pairs stage's manifest (source pool, image count), when it is still on disk (an
    unreadable one is refused, naming it)."""
    pairs_file = aggregate.get("votes", {}).get("pairs_file")
    if not pairs_file:
        return {}
    return read_manifest(pairs_file, "pairs manifest", missing_ok=True) or {}
