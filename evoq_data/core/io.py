"""Reading and writing evoq's files safely.

Every file evoq writes appears whole or not at all: it is written to a temporary file in the
same folder, flushed to disk (fsync) and renamed into place (:func:`atomic_path`), so a crash
leaves either the old file or the new one, never a truncated one. Parquet goes through
:func:`write_parquet_atomic`, JSON through :func:`write_json_atomic` and is read back by
:func:`read_json`, which names the file when it is unreadable. Output folders are created by
one helper that names the offending option.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from evoq_data.core.errors import EvoqError


def make_output_dir(path: str | Path, flag: str = "--out") -> Path:
    """Create an output folder (and its parents), or fail with one line naming the option."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise EvoqError(f"{flag} {path} is an existing file; give a folder") from None
    except OSError as exc:
        raise EvoqError(f"cannot create the {flag} folder {path}: {exc.strerror or exc}") from None
    return path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temp file name ``.NAME.<pid>.tmp`` beside ``path`` for the caller (or DuckDB's COPY)
    to write; on success it is fsynced and renamed to ``path``, on failure removed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise EvoqError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        if tmp.is_file():  # (is_file, not unlink: the parent may be a file)
            tmp.unlink()


def write_parquet_atomic(table: pa.Table, path: str | Path) -> Path:
    """Write a Parquet file (zstd) by writing a temp file and renaming it into place."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return Path(path)


def read_json(path: str | Path, what: str = "JSON file", *, missing_ok: bool = False):
    """The JSON object in ``path``, or one line naming the file: not found (None instead with
    ``missing_ok``), unreadable, not valid UTF-8 JSON, or not a JSON object."""
    path = Path(path)
    if not path.is_file():
        if missing_ok:
            return None
        raise EvoqError(f"{what} not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EvoqError(f"{what} {path} is not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise EvoqError(f"{what} {path} does not hold a JSON object")
    return data


def write_json_atomic(data, path: str | Path) -> Path:
    """Write JSON (indented, one trailing newline) by temp file, fsync and rename."""
    return write_text_atomic(json.dumps(data, indent=2, default=str) + "\n", path)


def write_text_atomic(text: str, path: str | Path) -> Path:
    """Write a text file (Markdown reports, cards) by temp file, fsync and rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise EvoqError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path


def csv_delimiter(path: Path) -> str:
    """The delimiter of a labels CSV/TSV: tab for .tsv; ';' for a .csv whose header has ';'
    and no ',' (as spreadsheets write it where ',' is the decimal mark); else ','."""
    if path.suffix.lower() == ".tsv":
        return "\t"
    with open(path, encoding="utf-8", errors="replace") as fh:
        header = fh.readline()
    return ";" if ";" in header and "," not in header else ","


def create_json_exclusive(data, path: str | Path) -> bool:
    """Write JSON to ``path`` only if no file has that name, atomically: the data go to a
    temp file that is then hard-linked to ``path`` (a link fails when the name exists), so of
    two processes racing for one name exactly one wins. Returns True when this call created
    it, False when the file was already there (read it and compare)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        return False
    tmp = path.with_name(f".{path.name}.{os.getpid()}.claim")
    write_json_atomic(data, tmp)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
