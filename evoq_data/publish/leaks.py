"""The last search before publishing: no path of the machine in the built folder.

Whatever the rules of :mod:`evoq_data.publish.redact` miss, this search finds before anything
is written to ``--local-dir`` or uploaded. It reads every file of the built folder (text files
by their bytes, Parquet files by every string value of every column) and reports

- every path the push knows (the declared root, the home folder, VOTES_DIR, PREFS_DIR, a
  local model folder, the pairs file), also without its leading '/';
- in the ``*_path`` columns, any value that is an absolute or home-relative path: one that
  starts with '/', '\\', '~' or a drive letter, or with ``home/USER/``, ``Users/USER/`` or
  ``root/`` (a home folder with its leading '/' stripped), or that is the absolute path of one of the
  images with its leading '/' stripped.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from evoq_data.publish.redact import PATH_COLUMNS

# A published *_path value must not start like a path of a machine.
MACHINE_PATH_REGEX = r"^(/|\\|~|[A-Za-z]:[\\/]|(home|Users)/[^/]+/|root/)"
SHOWN = 80  # characters of a found value shown in the message


def stripped_variants(paths) -> set[str]:
    """``paths`` without their leading '/', for those at least two folders deep
    (``/home/ann`` -> ``home/ann``; ``/tmp`` alone is too common a word to search for)."""
    out = set()
    for p in paths:
        bare = str(p).lstrip("/")
        if bare.count("/") >= 1 and len(bare) > 4:
            out.add(bare)
    return out


def _strings(field: pa.Field) -> bool:
    return pa.types.is_string(field.type) or pa.types.is_large_string(field.type)


def _path_column_leaks(col: pa.Array, image_paths: set[str]) -> list[str]:
    found = []
    starts = pc.match_substring_regex(col, MACHINE_PATH_REGEX)
    found += [v for v in pc.filter(col, starts).to_pylist()[:1]]
    if image_paths:
        stripped = pa.array(sorted({p.lstrip("/") for p in image_paths}), col.type)
        found += pc.filter(col, pc.is_in(col, value_set=stripped)).to_pylist()[:1]
    return found


def find_leaks(folder: Path, forbidden: list[str], image_paths: set[str] | None = None
               ) -> list[str]:
    """``file: string`` for every forbidden string (or its stripped variant) found in a file
    of ``folder``, and for every machine path in a ``*_path`` column (see the module doc)."""
    found = []
    needles = sorted({s for s in forbidden if s} | stripped_variants(forbidden))
    image_paths = image_paths or set()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = str(path.relative_to(folder))
        if path.suffix == ".parquet":
            pf = pq.ParquetFile(path)
            names = [f.name for f in pf.schema_arrow if _strings(f)]
            meta = b"".join(k + v for k, v in (pf.schema_arrow.metadata or {}).items())
            hits = {s for s in needles if s.encode() in meta}
            if names:
                for batch in pf.iter_batches(columns=names, batch_size=65536):
                    for name, col in zip(batch.schema.names, batch.columns, strict=True):
                        hits |= {s for s in needles
                                 if pc.any(pc.match_substring(col, s)).as_py()}
                        if name in PATH_COLUMNS:
                            hits |= {f"{name} {v[:SHOWN]!r}"
                                     for v in _path_column_leaks(col, image_paths)}
        else:
            data = path.read_bytes()
            hits = {s for s in needles if s.encode() in data}
        found += [f"{rel}: {s}" for s in sorted(hits)]
    return found
