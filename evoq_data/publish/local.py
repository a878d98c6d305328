"""``push --local-dir``: a staged version becomes the content of a local folder.

The folder holds one version at a time, with the same version integrity as the Hub: a
version already written with the same data is left untouched, one written with other data
is refused (even after later versions: ``.evoq-versions.json`` keeps every version's content
hash), and a folder evoq did not write is refused. The staged folder replaces the old one by
two renames (:mod:`evoq_data.publish.staging` puts the old one back if a push is killed
between them).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from evoq_data.core.errors import EvoqError
from evoq_data.core.io import read_json, write_json_atomic

VERSIONS_FILE = ".evoq-versions.json"  # every version written to a --local-dir: its hash


def _local_versions(local_dir: Path) -> dict[str, str]:
    """version -> content hash of every version this folder has held (the local tags)."""
    versions: dict[str, str] = {}
    path = local_dir / VERSIONS_FILE
    if path.is_file():
        data = read_json(path, "local version list")
        if not isinstance(data.get("versions"), dict):
            raise EvoqError(f"{path} is not an evoq version list; move it away")
        versions.update(data["versions"])
    old_meta = local_dir / "evoq.json"
    if old_meta.is_file():
        old = read_json(old_meta, "evoq.json")
        if old.get("version") and old.get("content_hash"):
            versions.setdefault(old["version"], old["content_hash"])
    return versions


def write_local(staging: Path, local_dir: Path, meta: dict) -> str:
    """Move the staged version into ``local_dir``: a version already written with the same
    data -> untouched; with other data -> refused (even after later versions); a folder evoq
    did not write -> refused."""
    versions: dict[str, str] = {}
    if local_dir.exists() and any(local_dir.iterdir()):
        if not (local_dir / "evoq.json").is_file():
            raise EvoqError(f"--local-dir {local_dir} is not empty and holds no evoq.json; "
                            "choose an empty or new folder")
        versions = _local_versions(local_dir)
    version, content = meta["version"], meta["content_hash"]
    if version in versions:
        if versions[version] == content:
            return "unchanged"
        raise EvoqError(f"{local_dir} already holds version {version} with other "
                        f"content ({versions[version]}, now {content}); a version never "
                        "changes: use a new --version")
    versions[version] = content
    write_json_atomic({"versions": versions}, staging / VERSIONS_FILE)
    local_dir.parent.mkdir(parents=True, exist_ok=True)
    old_dir = local_dir.with_name(f".{local_dir.name}.old-{os.getpid()}")
    if local_dir.exists():
        os.replace(local_dir, old_dir)
    os.replace(staging, local_dir)
    shutil.rmtree(old_dir, ignore_errors=True)
    return "written"
