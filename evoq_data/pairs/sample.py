"""Sample random image pairs from a pool (the paper's offline stage input).

Pairs are unordered and distinct, never an image with itself, and a pure function of the pool
(its image ids) and the seed. Inside a pair, ``image_a`` is the image with the smaller id;
which one is *shown* first is decided per vote by ``evoq-data vote``.
"""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path

import numpy as np
import pyarrow as pa

from evoq_data.core.errors import EvoqError
from evoq_data.core.io import write_parquet_atomic
from evoq_data.core.manifests import manifest_path, new_manifest, write_manifest
from evoq_data.core.schemas import PAIRS_SCHEMA
from evoq_data.images.pool import PoolImage, load_pool

log = logging.getLogger(__name__)


def make_pair_id(image_a_id: str, image_b_id: str) -> str:
    """A stable id for an unordered pair of images (order of the arguments does not matter)."""
    a, b = sorted((image_a_id, image_b_id))
    return hashlib.sha256(f"{a}:{b}".encode()).hexdigest()[:20]


def unrank_pairs(k: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Map linear indices into the lexicographic list of pairs (i < j) of m items to (i, j)."""
    k = np.asarray(k, dtype=np.int64)
    total = m * (m - 1) // 2
    # Row i holds pairs (i, i+1..m-1); count the pairs at or after row i: (m-i)(m-i-1)/2.
    r = total - 1 - k  # index counted from the end
    t = np.floor((np.sqrt(8.0 * r + 1.0) - 1.0) / 2.0).astype(np.int64)
    # fix rounding at the edges
    t += ((t + 1) * (t + 2) // 2 <= r).astype(np.int64)
    t -= (t * (t + 1) // 2 > r).astype(np.int64)
    i = m - 2 - t
    j = m - 1 - (r - t * (t + 1) // 2)
    return i, j


def sample_pairs(image_ids: list[str], num_pairs: int, seed: int) -> list[tuple[int, int]]:
    """Choose ``num_pairs`` distinct unordered pairs of distinct indices, deterministically."""
    m = len(image_ids)
    total = m * (m - 1) // 2
    if num_pairs < 1:
        raise EvoqError(f"--num-pairs must be at least 1, got {num_pairs}")
    if num_pairs > total:
        raise EvoqError(
            f"asked for {num_pairs} pairs but {m} images give only {total} distinct pairs; "
            f"lower --num-pairs or add images"
        )
    rng = np.random.default_rng(seed)
    k = rng.choice(total, size=num_pairs, replace=False)
    i, j = unrank_pairs(k, m)
    return list(zip(i.tolist(), j.tolist(), strict=True))


def pairs_table(images: list[PoolImage], picks: list[tuple[int, int]]) -> pa.Table:
    rows = {name: [] for name in PAIRS_SCHEMA.names}
    for i, j in picks:
        a, b = images[i], images[j]
        if a.image_id > b.image_id:
            a, b = b, a
        rows["pair_id"].append(make_pair_id(a.image_id, b.image_id))
        rows["image_a_id"].append(a.image_id)
        rows["image_a_path"].append(str(Path(a.path).resolve()))
        rows["image_b_id"].append(b.image_id)
        rows["image_b_path"].append(str(Path(b.path).resolve()))
        rows["reference_id"].append(None)
        rows["known_better_id"].append(None)
    return pa.table(rows, schema=PAIRS_SCHEMA)


def write_pairs(table: pa.Table, out: Path, manifest: dict) -> None:
    """The pairs file and its manifest (``<stem>.manifest.json``), both written atomically."""
    write_parquet_atomic(table, out)
    write_manifest(out, new_manifest("pairs", num_pairs=table.num_rows, **manifest))


def run_pairs(images: str, num_pairs: int, seed: int, out: str | Path, *,
              image_column: str = "image", split: str = "train",
              max_pixels: int | None = None, quiet: bool = False) -> dict:
    """The ``evoq-data pairs`` stage. Returns the manifest (with the pool report)."""
    out = Path(out)
    if num_pairs < 1:  # before scanning a pool that may be large
        raise EvoqError(f"--num-pairs must be at least 1, got {num_pairs}")
    kwargs = {"max_pixels": max_pixels} if max_pixels else {}
    pool, report = load_pool(images, image_column=image_column, split=split,
                             cache_dir=out.parent / f"{out.stem}-images", quiet=quiet, **kwargs)
    if len(pool) < 2:
        raise EvoqError(f"the pool {images} has {len(pool)} usable image(s) "
                        f"({len(report.skipped)} skipped); pairs need at least 2")
    picks = sample_pairs([im.image_id for im in pool], num_pairs, seed)
    table = pairs_table(pool, picks)
    manifest = {
        "source": str(images),
        "seed": seed,
        "possible_pairs": math.comb(len(pool), 2),
        "pool": report.as_dict(),
    }
    write_pairs(table, out, manifest)
    return {"out": str(out), "manifest": str(manifest_path(out)), "num_pairs": table.num_rows,
            "images": report.images, "skipped": report.skipped, "duplicates": report.duplicates}
