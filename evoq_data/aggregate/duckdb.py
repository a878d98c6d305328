"""DuckDB for the aggregation: a connection within a memory budget, the sql/ files run with
their parameters bound, tables stored and files written from them.

Every statement comes from the top-level ``sql/`` folder. Values are bound as ``$name``
parameters; the only text formatted into SQL is what DuckDB cannot bind (the file lists of
table functions, COPY targets, a stored table's name, another sql/ file composed into a
statement), filled into a file's ``{name}`` placeholders by :func:`render_sql`, which quotes
every path with :func:`sql_quote`, the one quoting helper.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from evoq_data.core.errors import EvoqError
from evoq_data.core.io import atomic_path
from evoq_data.core.resources import read_sql

_COMMENT = re.compile(r"--[^\n]*")
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
_PARAMETER = re.compile(r"\$([a-z_]+)")
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")


def sql_quote(value: str | Path) -> str:
    """The one place a value is formatted into SQL: a single-quoted string literal (paths
    in table functions and COPY targets, which DuckDB cannot bind as parameters)."""
    return "'" + str(value).replace("'", "''") + "'"


def _query_text(name: str) -> str:
    return read_sql(name).strip().rstrip(";")


def render_sql(name: str, *, paths: dict[str, str | Path | Sequence[str | Path]] | None = None,
               queries: dict[str, str] | None = None,
               identifiers: dict[str, str] | None = None) -> str:
    """The text of ``sql/<name>.sql`` with its ``{placeholders}`` filled: ``paths`` (one path,
    or a list of paths as a SQL list) quoted by :func:`sql_quote`, ``queries`` (already
    rendered SQL of other sql/ files) inserted as they are, ``identifiers`` (table names
    chosen by the code) checked to be plain names. Every placeholder must be filled."""
    values: dict[str, str] = {}
    for key, value in (paths or {}).items():
        if isinstance(value, str | Path):
            values[key] = sql_quote(value)
        else:
            values[key] = "[" + ", ".join(sql_quote(v) for v in value) + "]"
    for key, value in (identifiers or {}).items():
        if not _IDENTIFIER.fullmatch(value):
            raise ValueError(f"not a plain SQL identifier: {value!r}")
        values[key] = value
    values.update(queries or {})
    text = _COMMENT.sub("", _query_text(name))  # (the header names the placeholders too)
    wanted = set(_PLACEHOLDER.findall(text))
    if wanted != set(values):
        raise ValueError(f"sql/{name}.sql takes {sorted(wanted)}, got {sorted(values)}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def _bound(statement: str, params: dict) -> dict:
    """The parameters a statement names (DuckDB refuses extra ones)."""
    names = set(_PARAMETER.findall(statement))
    missing = names - set(params)
    if missing:
        raise ValueError(f"missing SQL parameter(s) {sorted(missing)}")
    return {k: v for k, v in params.items() if k in names}


def execute(con, sql: str, params: dict | None = None):
    """Run rendered SQL, statement by statement (DuckDB binds parameters in the last
    statement only), each with the parameters it names; returns the last result. Comments
    are removed first (sql/ files use only ``--`` comments and no ``--`` in strings)."""
    params = params or {}
    code = _COMMENT.sub("", sql)
    statements = [s.strip().rstrip(";").strip() for s in code.split(";\n")]
    result = None
    for statement in filter(None, statements):
        result = con.execute(statement, _bound(statement, params))
    return result


def run_sql(con, name: str, **params):
    """Run ``sql/<name>.sql`` with its parameters bound; returns the DuckDB result."""
    return execute(con, read_sql(name), params)


def arrow_table(con, name: str):
    """The rows of ``sql/<name>.sql`` (a query without parameters) as an Arrow table (through
    ``con.sql``: a DB-API result would copy the rows once more)."""
    return con.sql(_COMMENT.sub("", _query_text(name))).to_arrow_table()


def connect(threads: int | None = None, memory_limit: str = "1GB",
            temp_directory: str | Path | None = None):
    """A DuckDB connection set up for streaming aggregation within a memory budget
    (sql/configure_connection.sql) with the Wilson-interval macros defined."""
    import duckdb

    if threads is not None and threads < 1:
        raise EvoqError(f"--threads must be at least 1, got {threads}")
    con = duckdb.connect(":memory:")
    try:
        run_sql(con, "configure_connection", threads=int(threads or os.cpu_count() or 1),
                memory_limit=memory_limit,
                temp_directory=None if temp_directory is None else str(temp_directory))
    except duckdb.Error as exc:
        con.close()
        raise EvoqError(f"--memory-limit {memory_limit!r} is not a size such as 1GB or "
                        f"512MB ({str(exc).splitlines()[0]})") from None
    run_sql(con, "define_wilson_macros")
    return con


def materialise(con, table: str, name: str, inputs: dict[str, str] | None = None,
                **params) -> None:
    """Store the result of ``sql/<name>.sql`` as table ``table`` of the in-memory database
    (sql/create_table.sql). ``inputs`` maps a relation the query reads to another sql/ file
    computing it, composed as a CTE, so an intermediate result is never stored."""
    sql = _query_text(name)
    if inputs:
        ctes = ",\n".join(f"{rel} AS (\n{_query_text(src)}\n)" for rel, src in inputs.items())
        sql = f"WITH {ctes}\n{sql}"
    execute(con, render_sql("create_table", identifiers={"table": table},
                            queries={"query": sql}), params)


def fetch_dicts(result) -> list[dict]:
    """The rows of a DuckDB result as dictionaries keyed by column name."""
    cols = [d[0] for d in result.description]
    return [dict(zip(cols, row, strict=True)) for row in result.fetchall()]


def copy_parquet(con, name: str, path: Path, **params) -> Path:
    """Write the rows of ``sql/<name>.sql`` to ``path`` (sql/copy_to_parquet.sql: zstd level
    1) through a temp file, fsync and a rename."""
    with atomic_path(path) as tmp:
        execute(con, render_sql("copy_to_parquet", paths={"path": tmp},
                                queries={"query": _query_text(name)}), params)
    return path


def float_array(values: np.ndarray) -> pa.Array:
    """A float64 Arrow array of ``values`` with NaN as null. Built from the buffers:
    ``pa.array`` on a numpy array imports pandas (about 1 s of start-up)."""
    values = np.ascontiguousarray(values, dtype=np.float64)
    valid = np.packbits(~np.isnan(values), bitorder="little")
    return pa.Array.from_buffers(pa.float64(), len(values),
                                 [pa.py_buffer(valid), pa.py_buffer(values)])
