"""Human labels for ``evoq-data eval`` (and evolve's up-front checks): the benchmark names,
reading a labels manifest (CSV/TSV/Parquet) or a HF dataset into MOS per image id, and the
checks on its rows (missing or non-numeric MOS, conflicting duplicates), each named by row.

Labels are matched to scores by image content (sha256 of the file bytes, evoq's image id), so
a labels manifest may name files anywhere.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from evoq_data.core.errors import EvoqError
from evoq_data.core.ids import file_sha256
from evoq_data.core.io import csv_delimiter

log = logging.getLogger(__name__)

# name -> (display name, expected test-set size) for DeQA-Score's splits (docs/method.md).
BENCHMARKS = {
    "koniq": ("KonIQ", 2000), "spaq": ("SPAQ", 2000), "kadid": ("KADID-10k", 2000),
    "pipal": ("PIPAL", 5000), "livew": ("LIVE-Wild", 1162), "agiqa": ("AGIQA-3K", 2982),
    "tid2013": ("TID2013", 3000), "csiq": ("CSIQ", 866),
}
_ALIASES = {"koniq10k": "koniq", "kadid10k": "kadid", "livewild": "livew",
            "livechallenge": "livew", "livec": "livew", "agiqa3k": "agiqa", "tid": "tid2013",
            "tid13": "tid2013"}
PATH_COLUMNS = ("path", "image_path", "image", "file", "filename")


def benchmark_key(name: str) -> str | None:
    """The registry key a labels name refers to (case and punctuation ignored), or None."""
    norm = re.sub(r"[^a-z0-9]", "", name.lower())
    norm = _ALIASES.get(norm, norm)
    return norm if norm in BENCHMARKS else None


# --- inputs ------------------------------------------------------------------------------

def file_id(path: str | Path) -> str:
    """evoq's image id of a file: the sha256 of its bytes (the one rule, core.ids)."""
    return file_sha256(path)


SHOWN_ROWS = 10  # row numbers named in a warning or an error, then a count


@dataclass
class Labels:
    name: str
    source: str
    mos: dict[str, float]  # image_id -> MOS
    rows: int              # rows in the labels source (for the registry check)
    dropped_rows: list[int] = field(default_factory=list)  # rows (from 1) without a MOS
    merged_duplicates: int = 0  # rows repeating an image with the same MOS
    warnings: list[str] = field(default_factory=list)


def read_label_table(path: Path) -> pa.Table:
    try:
        if path.suffix.lower() in (".csv", ".tsv"):
            import pyarrow.csv as pacsv

            parse = pacsv.ParseOptions(delimiter=csv_delimiter(path))
            return pacsv.read_csv(path, parse_options=parse)
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise EvoqError(f"cannot read labels file {path}: {exc}") from exc


def _column(table: pa.Table, wanted: str) -> str | None:
    by_lower = {c.lower(): c for c in table.column_names}
    return by_lower.get(wanted.lower())


def _mos_values(table: pa.Table, mos_column: str, source: str) -> list:
    col = _column(table, mos_column)
    if col is None:
        raise EvoqError(f"labels {source} have no {mos_column!r} column (columns: "
                        f"{', '.join(table.column_names)}); pass --mos-column")
    try:
        return table.column(col).cast(pa.float64()).to_pylist()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        hint = ""
        if str(source).lower().endswith(".csv") and csv_delimiter(Path(source)) == ";":
            hint = " (the file looks ;-delimited with ',' as the decimal mark: save it " \
                   "with '.' decimals)"
        raise EvoqError(f"labels {source}: column {col!r} is not numeric{hint} ({exc})") from exc


def manifest_labels(path: Path, mos_column: str) -> tuple[list[str], list, list[str]]:
    """Image ids, MOS values and what each row names (its path or image id)."""
    table = read_label_table(path)
    mos = _mos_values(table, mos_column, str(path))
    id_col = _column(table, "image_id")
    if id_col is not None:
        ids = [str(v) for v in table.column(id_col).to_pylist()]
        return ids, mos, [f"image_id {i}" for i in ids]
    path_col = next((c for c in (_column(table, p) for p in PATH_COLUMNS) if c), None)
    if path_col is None:
        raise EvoqError(f"labels {path} need an image_id or a path column "
                        f"({', '.join(PATH_COLUMNS)}); columns: {', '.join(table.column_names)}")
    named = [str(p) for p in table.column(path_col).to_pylist()]
    files = [Path(p).expanduser() for p in named]
    files = [f if f.is_absolute() else path.parent / f for f in files]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5
                                          else "")
        raise EvoqError(f"{len(missing)} image path(s) in labels {path} do not exist: {shown}")
    return [file_id(f) for f in files], mos, [f"path {p}" for p in named]


def _dataset_labels(source: str, image_column: str, mos_column: str,
                    split: str) -> tuple[list[str], list]:
    import datasets

    path = Path(source)
    try:
        if path.is_dir() and any((path / m).is_file() for m in ("dataset_info.json",
                                                                 "dataset_dict.json")):
            ds = datasets.load_from_disk(str(path))
            ds = ds[split] if isinstance(ds, datasets.DatasetDict) else ds
        else:
            ds = datasets.load_dataset(source, split=split)
    except Exception as exc:  # noqa: BLE001 - datasets raises many types
        raise EvoqError(f"cannot load labels dataset {source!r} (split {split!r}): {exc}") from exc
    if image_column not in ds.column_names:
        raise EvoqError(f"labels dataset {source} has no {image_column!r} column (columns: "
                        f"{', '.join(ds.column_names)}); pass --image-column")
    col = next((c for c in ds.column_names if c.lower() == mos_column.lower()), None)
    if col is None:
        raise EvoqError(f"labels {source} have no {mos_column!r} column (columns: "
                        f"{', '.join(ds.column_names)}); pass --mos-column")
    mos = _mos_values(pa.table({col: ds[col]}), col, source)
    try:
        cells = ds.cast_column(image_column, datasets.Image(decode=False))[image_column]
    except (ValueError, TypeError, NotImplementedError) as exc:  # pyarrow's cast errors
        raise EvoqError(f"column {image_column!r} of labels dataset {source} does not hold "
                        f"images ({ds.features[image_column]}); pass --image-column") from exc
    ids = []
    for cell in cells:
        data = (cell or {}).get("bytes")
        if data is None and (cell or {}).get("path"):
            data = Path(cell["path"]).read_bytes()
        if data is None:
            raise EvoqError(f"labels dataset {source} has an empty {image_column!r} cell")
        ids.append(hashlib.sha256(data).hexdigest())
    return ids, mos, [f"image {i[:12]}" for i in ids]


def load_labels(spec: str, *, image_column: str = "image", mos_column: str = "mos",
                split: str = "test") -> Labels:
    """``NAME=SOURCE`` or ``SOURCE``: a CSV/TSV/Parquet manifest or a HF dataset with MOS."""
    name, sep, source = spec.partition("=")
    if not sep:
        name, source = Path(spec).stem or spec, spec
    path = Path(source)
    if path.suffix.lower() in (".csv", ".tsv", ".parquet"):
        if not path.is_file():
            raise EvoqError(f"labels file not found: {path}")
        ids, mos, keys = manifest_labels(path, mos_column)
    elif path.exists() or "/" in source:
        ids, mos, keys = _dataset_labels(source, image_column, mos_column, split)
    else:
        raise EvoqError(f"labels not found: {source} (a .csv/.tsv/.parquet manifest or a "
                        "dataset folder or Hub id)")
    return check_label_rows(name, source, ids, mos, keys)


def _rows_text(rows: list[int]) -> str:
    shown = ", ".join(str(r) for r in rows[:SHOWN_ROWS])
    return shown + (f" and {len(rows) - SHOWN_ROWS} more" if len(rows) > SHOWN_ROWS else "")


def check_label_rows(name: str, source: str, ids: list[str], mos: list, keys: list[str]) -> Labels:
    """One MOS per image: rows without a usable MOS (empty, NaN, infinite) are left out and
    reported; an image listed twice with the same MOS is merged and reported; an image listed
    with two different MOS values is refused, naming both rows. Rows count from 1 (the
    header is not a row: in a CSV, row N is on line N + 1)."""
    labels: dict[str, float] = {}
    first: dict[str, int] = {}
    dropped: list[int] = []
    merged = 0
    for row, (image, value, key) in enumerate(zip(ids, mos, keys, strict=True), start=1):
        if value is None or not math.isfinite(value):
            dropped.append(row)
            continue
        value = float(value)
        if image in labels:
            if labels[image] != value:
                was = first[image]
                same = keys[was - 1] == key
                what = key if same else f"{keys[was - 1]} and {key} (the same image bytes)"
                raise EvoqError(
                    f"labels {source} list {what} twice with different MOS: {labels[image]:g} "
                    f"(row {was}) and {value:g} (row {row}); keep one MOS per image")
            merged += 1
            continue
        labels[image], first[image] = value, row
    warnings = []
    if dropped:
        warnings.append(f"{name}: {len(dropped)} label row(s) without a usable MOS (empty or "
                        f"not a finite number) were left out: row(s) {_rows_text(dropped)}")
    if merged:
        warnings.append(f"{name}: {merged} label row(s) repeat an image with the same MOS and "
                        "were merged")
    for w in warnings:
        log.warning(w)
    return Labels(name=name, source=source, mos=labels, rows=len(ids), dropped_rows=dropped,
                  merged_duplicates=merged, warnings=warnings)
