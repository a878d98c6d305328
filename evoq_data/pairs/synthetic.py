"""``evoq-data pairs --synthetic DIR``: pairs of distorted variants with a known order.

Variants of the same reference and the same distortion type (the reference included, as
level 0) are paired, and the lower level is recorded as the known better image
(``known_better_id``). Variants of different types have no known order, so no such pair is
made. The folder comes from ``evoq-data distort`` (:mod:`evoq_data.images.distort`).
"""

from __future__ import annotations

import logging
from itertools import combinations
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from evoq_data.core.errors import EvoqError
from evoq_data.core.schemas import PAIRS_SCHEMA, check_columns
from evoq_data.images.distort import MANIFEST_COLUMNS, MANIFEST_NAME
from evoq_data.pairs.sample import make_pair_id, write_pairs

log = logging.getLogger(__name__)


def read_distortions(folder: str | Path) -> pa.Table:
    """The manifest of a ``distort`` folder (or the manifest file itself), checked."""
    path = Path(folder)
    path = path / MANIFEST_NAME if path.is_dir() else path
    if not path.exists():
        raise EvoqError(f"no {MANIFEST_NAME} in {folder}; make it with `evoq-data distort`")
    check_columns(path, MANIFEST_COLUMNS, "distortion manifest")
    return pq.read_table(path, columns=list(MANIFEST_COLUMNS))


def synthetic_pairs(manifest: pa.Table) -> pa.Table:
    """Every pair of variants sharing a reference and a distortion type, with the known order.

    The reference (level 0) joins every type's group as its best member; the lower level is
    the known better image. No cross-type pairs (their order is unknown).
    """
    groups: dict[str, dict] = {}
    for row in manifest.to_pylist():
        groups.setdefault(row["reference_id"], {"reference": None, "kinds": {}})
        g = groups[row["reference_id"]]
        if row["level"] == 0:
            g["reference"] = row
        else:
            g["kinds"].setdefault(row["distortion"], []).append(row)
    cols = {name: [] for name in PAIRS_SCHEMA.names}
    seen: set[str] = set()
    identical = 0
    for ref_id in sorted(groups):
        g = groups[ref_id]
        for kind in sorted(g["kinds"]):
            members = sorted(g["kinds"][kind], key=lambda r: r["level"])
            if g["reference"] is not None:
                members = [g["reference"], *members]
            for better, worse in combinations(members, 2):  # sorted by level: first is better
                if better["level"] == worse["level"]:
                    continue
                a, b = sorted((better, worse), key=lambda r: r["image_id"])
                if a["image_id"] == b["image_id"]:  # a distortion that changed no byte
                    identical += 1
                    continue
                pair_id = make_pair_id(a["image_id"], b["image_id"])
                if pair_id in seen:
                    continue
                seen.add(pair_id)
                for name, value in (("pair_id", pair_id), ("image_a_id", a["image_id"]),
                                    ("image_a_path", a["path"]), ("image_b_id", b["image_id"]),
                                    ("image_b_path", b["path"]), ("reference_id", ref_id),
                                    ("known_better_id", better["image_id"])):
                    cols[name].append(value)
    if identical:
        log.warning("%d variant pair(s) left out: both files are the same image (a distortion "
                    "that changed nothing), so their known order would be false", identical)
    return pa.table(cols, schema=PAIRS_SCHEMA)


def run_synthetic_pairs(folder: str | Path, out: str | Path, *, num_pairs: int | None = None,
                        seed: int = 0) -> dict:
    """``evoq-data pairs --synthetic DIR``: known-order pairs from a ``distort`` folder."""
    out = Path(out)
    table = synthetic_pairs(read_distortions(folder))
    available = table.num_rows
    if available == 0:
        raise EvoqError(f"{folder} gives no synthetic pairs (no reference with variants)")
    if num_pairs is not None:
        if not 1 <= num_pairs <= available:
            raise EvoqError(f"--num-pairs must be in [1, {available}] for {folder}, "
                            f"got {num_pairs}")
        keep = np.sort(np.random.default_rng(seed).choice(available, num_pairs, replace=False))
        table = table.take(pa.array(keep))
    write_pairs(table, out, {"source": str(folder), "synthetic": True, "seed": seed,
                             "possible_pairs": available})
    return {"out": str(out), "num_pairs": table.num_rows, "possible_pairs": available,
            "references": len(set(table.column("reference_id").to_pylist()))}


