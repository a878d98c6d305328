"""The one reader of a pairs file, for every stage that reads one (``vote``, ``aggregate``).

A pairs file is checked before anything is done with it: the needed columns, at least one
row, no empty id, every ``pair_id`` once, and never an image paired with itself
(``image_a_id == image_b_id``: its votes would be coin flips between two copies of one
picture, counted as a preference). Each refusal is one line naming the file and the row
(rows count from 0, as in the Parquet file).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from evoq_data.core.errors import EvoqError
from evoq_data.core.schemas import PAIRS_COLUMNS, check_columns

SHOWN = 80  # characters of an id shown in a message


def _first(mask: pa.ChunkedArray) -> int | None:
    """The index of the first true value of ``mask`` (null as false), or None."""
    hits = pc.indices_nonzero(pc.fill_null(mask, False))
    return hits[0].as_py() if len(hits) else None


def read_pairs_table(pairs_path: str | Path,
                     columns: Sequence[str] = PAIRS_COLUMNS) -> pa.Table:
    """The ``columns`` of a pairs file, checked (see the module doc)."""
    path = Path(pairs_path)
    if not path.exists():
        raise EvoqError(f"pairs file not found: {path}")
    check_columns(path, columns, "pairs")
    try:
        table = pq.read_table(path, columns=list(columns))
    except (pa.ArrowException, OSError) as exc:
        raise EvoqError(f"pairs file {path} is not readable ({str(exc)[:SHOWN]})") from exc
    if table.num_rows == 0:
        raise EvoqError(f"pairs file {path} has no rows")
    for name in ("pair_id", "image_a_id", "image_b_id"):
        row = _first(pc.is_null(table.column(name)))
        if row is not None:
            raise EvoqError(f"pairs file {path} row {row}: {name} is empty")
    a, b = table.column("image_a_id"), table.column("image_b_id")
    row = _first(pc.equal(a, b))
    if row is not None:
        same = int(pc.sum(pc.cast(pc.equal(a, b), pa.int64())).as_py())
        raise EvoqError(f"pairs file {path} row {row} (pair "
                        f"{str(table.column('pair_id')[row].as_py())[:SHOWN]}) pairs image "
                        f"{str(a[row].as_py())[:SHOWN]} with itself ({same} such row(s)); a "
                        "pair must compare two different images")
    ids = table.column("pair_id")
    if pc.count_distinct(ids).as_py() < table.num_rows:
        seen: set[str] = set()
        row, dup = next((i, p) for i, p in enumerate(ids.to_pylist())
                        if p in seen or seen.add(p))
        raise EvoqError(f"pairs file {path} lists pair {str(dup)[:SHOWN]} more than once "
                        f"(again in row {row}); every pair_id must be unique (its K votes "
                        "would be written twice)")
    return table


def read_pairs(pairs_path: str | Path) -> list[dict]:
    """The rows of a pairs file (PAIRS_COLUMNS), checked (see the module doc)."""
    return read_pairs_table(pairs_path).to_pylist()
