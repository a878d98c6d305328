"""Manifests: the small JSON file each stage writes beside its output.

Every manifest carries ``stage``, ``schema_version``, ``evoq_version`` and ``created_at``, and
is written atomically (:func:`evoq_data.core.io.write_json_atomic`). A folder output keeps it
as ``manifest.json`` inside; a file output ``NAME.parquet`` keeps it beside as
``NAME.manifest.json`` (:func:`manifest_path`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from evoq_data import __version__
from evoq_data.core.io import read_json, write_json_atomic
from evoq_data.core.schemas import SCHEMA_VERSION

MANIFEST_NAME = "manifest.json"


def manifest_path(output: str | Path) -> Path:
    """Where the manifest of ``output`` lives: inside a folder (also one named like a file,
    ``votes.parquet/``), beside a file."""
    output = Path(output)
    if output.suffix in (".parquet", ".csv", ".json", ".jsonl") and not output.is_dir():
        return output.with_name(output.stem + ".manifest.json")
    return output / MANIFEST_NAME


def new_manifest(stage: str, **fields) -> dict:
    """A manifest dict with the fields every manifest has, then ``fields``."""
    return {"stage": stage, "schema_version": SCHEMA_VERSION, "evoq_version": __version__,
            "created_at": datetime.now(UTC).isoformat(), **fields}


def write_manifest(output: str | Path, manifest: dict) -> Path:
    """Write ``manifest`` (from :func:`new_manifest`) for ``output``, atomically."""
    for key in ("stage", "schema_version", "evoq_version", "created_at"):
        if key not in manifest:
            raise ValueError(f"manifest lacks {key!r}; build it with new_manifest()")
    return write_json_atomic(manifest, manifest_path(output))


def read_manifest(path: str | Path, what: str = "manifest", *, missing_ok: bool = False):
    """Read a manifest (a folder's, a file's, or the manifest file itself), or fail with one
    line naming it (:func:`evoq_data.core.io.read_json`)."""
    path = Path(path)
    if not path.name.endswith(".json"):
        path = manifest_path(path)
    return read_json(path, what, missing_ok=missing_ok)
