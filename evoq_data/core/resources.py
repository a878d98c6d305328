"""Locate the files that live in the repository's top-level sql/ and cards/ folders.

From a source checkout (editable install) they are read from the repository; an installed
wheel carries them under ``evoq_data/_resources``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from evoq_data.core.errors import EvoqError

_PKG = Path(__file__).resolve().parent.parent  # the evoq_data package


def _root(kind: str) -> Path:
    for cand in (_PKG / "_resources" / kind, _PKG.parent / kind):
        if cand.is_dir():
            return cand
    raise EvoqError(f"evoq installation is incomplete: no {kind}/ folder found near {_PKG}")


def sql_path(name: str) -> Path:
    """Path of ``sql/<name>.sql``."""
    path = _root("sql") / f"{name.removesuffix('.sql')}.sql"
    if not path.is_file():
        raise EvoqError(f"no SQL file {path.name} in {path.parent}")
    return path


def read_sql(name: str) -> str:
    return sql_path(name).read_text(encoding="utf-8")


def card_path(name: str) -> Path:
    """Path of a card template in ``cards/``."""
    path = _root("cards") / name
    if not path.is_file():
        raise EvoqError(f"no card template {name} in {path.parent}")
    return path


def sql_hashes() -> dict[str, str]:
    """sha256 of every SQL file, for provenance in manifests and cards."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(_root("sql").glob("*.sql"))
    }
