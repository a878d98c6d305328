"""What a published dataset says about the machine that made it: nothing private.

The PREFS_DIR, the vote manifest and the raw votes name files by absolute paths (the pool, a
local model folder, VOTES_DIR, the pairs file), and so often a user name. ``push`` publishes

- every ``*_path`` column relative to the **pool root** (the folder given to ``pairs``, or the
  folder that holds every image), the pool being named by a label (``--pool-label``) or, by
  default, by the hash of its image ids (``pool-<12 hex>``);
- every other absolute path it knows (a local model folder, VOTES_DIR, PREFS_DIR, the pairs
  file, the home folder) by a short name: the model by its folder name, the others by theirs;
- any other string value of a manifest that is an absolute path by its last component.

Before anything is written or uploaded, :func:`find_leaks` reads every file of the built
folder (text files as text, Parquet string columns value by value) and refuses the push when
one of those paths is still there. ``push --keep-local-paths`` publishes them on purpose.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from evoq_data.core.names import check_label
from evoq_data.publish.repo import pairs_manifest

PATH_COLUMNS = ("image_path", "image_a_path", "image_b_path")


def _abs(p: str | Path) -> str:
    return os.path.abspath(os.path.expanduser(str(p)))


def _variants(p: str | Path) -> set[str]:
    """The absolute spelling of ``p`` and its symlink-resolved one."""
    a = _abs(p)
    return {a, os.path.realpath(a)}


def _is_local_path(value: str) -> bool:
    return value.startswith(("/", "~", "./", "../")) or (len(value) > 2 and value[1:3] == ":\\")


def pool_hash(image_ids) -> str:
    """The default pool label: the start of the sha256 of its sorted, distinct image ids."""
    digest = hashlib.sha256("\n".join(sorted(set(image_ids))).encode()).hexdigest()
    return f"pool-{digest[:12]}"


def pool_root(paths: list[str], named_source: str | None) -> str | None:
    """The folder the published paths are relative to: the pool given to ``pairs`` when it
    holds every image, else the deepest folder that does."""
    absolute = [_abs(p) for p in paths if p and _is_local_path(p)]
    if not absolute:
        return None
    if named_source and _is_local_path(named_source) and os.path.isdir(_abs(named_source)):
        src = _abs(named_source)
        if all(a == src or a.startswith(src.rstrip(os.sep) + os.sep) for a in absolute):
            return src
    return os.path.commonpath([os.path.dirname(a) for a in absolute])


@dataclass
class Redactor:
    """Replaces local absolute paths by relative paths and labels (see the module doc)."""

    root: str | None
    pool_label: str
    # absolute prefix -> the name published instead, longest prefix first
    names: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names: dict[str, str] = {}
        if self.root:
            for v in _variants(self.root):
                names[v] = self.pool_label
        for prefix, label in list(self.names.items()):
            for v in _variants(prefix):
                names.setdefault(v, label)
        home = _abs("~")
        if home not in ("/", ""):
            for v in _variants(home):
                names.setdefault(v, "~")
        self.names = dict(sorted(((k, v) for k, v in names.items() if len(k) > 1),
                                 key=lambda kv: -len(kv[0])))

    @property
    def forbidden(self) -> list[str]:
        """Strings that must not appear anywhere in the published folder."""
        return list(self.names)

    def text(self, s: str) -> str:
        """Every known absolute prefix in ``s`` replaced by its published name."""
        for prefix, label in self.names.items():
            if prefix in s:
                s = s.replace(prefix, label)
        return s

    def path(self, p: str | None) -> str | None:
        """A ``*_path`` value: relative to the pool root (posix separators)."""
        if p is None or not _is_local_path(p):
            return p
        a = _abs(p)
        if self.root:
            rel = os.path.relpath(a, self.root)
            if not rel.startswith(".."):
                return rel.replace(os.sep, "/")
        named = self.text(a)
        return named if named != a else posixpath.basename(a.replace(os.sep, "/"))

    def value(self, obj):
        """A manifest or stats value with every path replaced (recursively)."""
        if isinstance(obj, dict):
            return {k: self.value(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [self.value(v) for v in obj]
        if isinstance(obj, str):
            out = self.text(obj)
            if _is_local_path(out) and "\n" not in out:
                return posixpath.basename(out.rstrip("/\\").replace("\\", "/")) or out
            return out
        return obj

    def table(self, table: pa.Table) -> pa.Table:
        """``*_path`` columns made relative, every other string column de-pathed."""
        for i, name in enumerate(table.column_names):
            col = table.column(i)
            if not pa.types.is_string(col.type) and not pa.types.is_large_string(col.type):
                continue
            if name in PATH_COLUMNS:
                new = pa.array([self.path(v) for v in col.to_pylist()], type=col.type)
            elif any(pc.any(pc.match_substring(col, s)).as_py() for s in self.names):
                new = pa.array([None if v is None else self.text(v) for v in col.to_pylist()],
                               type=col.type)
            else:
                continue
            table = table.set_column(i, name, new)
        return table


def find_leaks(folder: Path, forbidden: list[str]) -> list[str]:
    """``file: string`` for every forbidden string found in a file of ``folder`` (text files
    by their bytes, Parquet files by every string value of every column)."""
    found = []
    needles = [s for s in forbidden if s]
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = str(path.relative_to(folder))
        if path.suffix == ".parquet":
            pf = pq.ParquetFile(path)
            names = [f.name for f in pf.schema_arrow
                     if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
            meta = b"".join(k + v for k, v in (pf.schema_arrow.metadata or {}).items())
            hits = {s for s in needles if s.encode() in meta}
            if names:
                for batch in pf.iter_batches(columns=names, batch_size=65536):
                    for col in batch.columns:
                        hits |= {s for s in needles
                                 if pc.any(pc.match_substring(col, s)).as_py()}
        else:
            data = path.read_bytes()
            hits = {s for s in needles if s.encode() in data}
        found += [f"{rel}: {s}" for s in sorted(hits)]
    return found


def make_redactor(src: dict, votes_dir: Path | None, pool_label: str | None) -> Redactor:
    """The path rules of this push (see the module doc)."""
    prefs, images = src["preferences"], src["images"]
    paths = images.column("image_path").to_pylist()
    ids = images.column("image_id").to_pylist()
    for side in "ab":
        paths += prefs.column(f"image_{side}_path").to_pylist()
        ids += prefs.column(f"image_{side}_id").to_pylist()
    aggregate = src["manifest"]
    vote = aggregate.get("votes") or {}
    pairs = pairs_manifest(aggregate)
    label = pool_label or pool_hash(ids)
    check_label(label, "--pool-label")
    names = {}
    model = str(vote.get("model") or "")
    if model.startswith(("/", "~", "./", "../")):
        names[model] = Path(model.rstrip("/")).name or "model"
    for value, name in ((aggregate.get("votes_dir"), "votes"), (votes_dir, "votes"),
                        (src["dir"], "prefs"), (vote.get("pairs_file"), None)):
        if value:
            names[str(value)] = name or Path(str(value)).name
    if vote.get("pairs_file"):
        names.setdefault(str(Path(vote["pairs_file"]).parent), ".")
    return Redactor(pool_root([p for p in paths if p], pairs.get("source")), label, names)
