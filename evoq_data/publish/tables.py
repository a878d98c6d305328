"""The Parquet tables of a published version: image columns as ``datasets.Image``, the
`datasets` features attached, and a config written as size-bounded shards with a content
digest that does not depend on the Parquet encoding or on how rows are split into files.

Shared by the repository folder (:mod:`evoq_data.publish.repo`) and the extra configs
(:mod:`evoq_data.publish.exports`, :mod:`evoq_data.publish.pseudo_mos`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SHARD_BYTES = 400 * 2**20  # target size of one Parquet data file


def image_struct(image_id: str, path: Path) -> dict:
    """The image as the judge saw it (:func:`evoq_data.images.decode.dataset_image`); its
    ``image_id`` stays the id of the source file (the sha256 of its bytes)."""
    from evoq_data.images.decode import dataset_image

    return dataset_image(path, image_id)


def with_features(table: pa.Table, image_cols: dict[str, list], after: str) -> pa.Table:
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


def hf_schema(table: pa.Table) -> pa.Table:
    import datasets

    features = datasets.Features.from_arrow_schema(table.schema)
    return table.cast(features.arrow_schema)


def shard_ranges(n_rows: int, n_bytes: int) -> list[tuple[int, int]]:
    """(start, length) row ranges so that each shard holds about SHARD_BYTES."""
    n = min(max(1, -(-n_bytes // SHARD_BYTES)), max(1, n_rows))
    step = max(1, -(-n_rows // n))
    return [(s, min(step, n_rows - s)) for s in range(0, n_rows, step)] or [(0, 0)]


class ConfigDigest:
    """sha256 over a config's column names, types and row values (bytes by their sha256):
    independent of Parquet encoding and of how the rows are split into files."""

    def __init__(self) -> None:
        self.h, self.schema = hashlib.sha256(), None

    @staticmethod
    def _plain(v):
        return "sha256:" + hashlib.sha256(v).hexdigest() if isinstance(v, bytes) else str(v)

    def update(self, table: pa.Table) -> None:
        if self.schema is None:
            self.schema = [[f.name, str(f.type)] for f in table.schema]
            self.h.update(json.dumps(self.schema).encode())
        for batch in table.to_batches(max_chunksize=4096):
            for row in batch.to_pylist():
                self.h.update(json.dumps(row, sort_keys=True, default=self._plain).encode() + b"\n")

    def hexdigest(self) -> str:
        return self.h.hexdigest()


def write_config(name: str, shards: list[Callable[[], Iterable[pa.Table]]], folder: Path,
                  row_group: int = 10_000) -> dict:
    """Write config ``name``: one Parquet file per shard, each fed table by table."""
    (folder / name).mkdir(parents=True, exist_ok=True)
    files, digest, rows = [], ConfigDigest(), 0
    for i, make in enumerate(shards):
        rel = f"{name}/train-{i:05d}-of-{len(shards):05d}.parquet"
        writer = None
        try:
            for table in make():
                if writer is None:
                    writer = pq.ParquetWriter(folder / rel, table.schema, compression="zstd")
                writer.write_table(table, row_group_size=row_group)
                digest.update(table)
                rows += table.num_rows
        finally:
            if writer is not None:
                writer.close()
        files.append(rel)
    return {"rows": rows, "files": files, "sha256": digest.hexdigest()}
