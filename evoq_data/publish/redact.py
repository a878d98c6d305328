"""What a published dataset says about the machine that made it: nothing private.

The PREFS_DIR, the vote manifest and the raw votes name files by absolute paths (the pool, a
local model folder, VOTES_DIR, the pairs file), and so often a user name. ``push`` publishes

- every ``*_path`` column relative to a **declared root** that holds every image: the pool
  folder given to ``pairs``, or the ``--images-root`` of ``votes import`` (recorded in the
  pairs manifest), the root being named by a label (``--pool-label``) or, by default, by the
  hash of its image ids (``pool-<12 hex>``); when no declared root holds every image, as the
  **bare file name** (the image is identified by its id, in the row beside it), never by a
  path of the machine;
- every other absolute path it knows (a local model folder, VOTES_DIR, PREFS_DIR, the pairs
  file, the home folder) by a short name: the model by its folder name, the others by theirs;
- any other string value of a manifest that is an absolute path by its last component.

Before anything is written or uploaded, :mod:`evoq_data.publish.leaks` searches every file
of the built folder and refuses the push when a machine path is still there.
``push --keep-local-paths`` publishes them on purpose.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

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


def pool_root(paths: list[str], declared: list[str | None]) -> str | None:
    """The folder the published paths are relative to: the first declared root (the pool
    given to ``pairs``, the ``--images-root`` of an import) that holds every image, else None
    (the paths are then published as bare file names)."""
    absolute = [_abs(p) for p in paths if p and _is_local_path(p)]
    for root in declared:  # (a relative one, as given to `pairs`, from the working folder)
        if root and os.path.isdir(_abs(root)):
            src = _abs(root)
            if all(a.startswith(src.rstrip(os.sep) + os.sep) for a in absolute):
                return src
    return None


@dataclass
class Redactor:
    """Replaces local absolute paths by relative paths and labels (see the module doc)."""

    root: str | None
    pool_label: str
    # absolute prefix -> the name published instead, longest prefix first
    names: dict[str, str] = field(default_factory=dict)
    # the absolute paths of the images (what the last search must not find, even stripped)
    image_paths: set[str] = field(default_factory=set)

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

    @property
    def file_names(self) -> bool:
        """True when the ``*_path`` columns are published as bare file names."""
        return self.root is None and bool(self.image_paths)

    @property
    def published_as(self) -> dict:
        """evoq.json's ``paths``: relative to the named root, or bare file names."""
        if self.file_names:
            return {"local": False, "file_names": True}
        return {"local": False, "relative_to": self.pool_label}

    def path(self, p: str | None) -> str | None:
        """A ``*_path`` value: relative to the declared root (posix separators), else the
        bare file name; never a path of the machine."""
        if p is None or not _is_local_path(p):
            return p
        a = _abs(p)
        if self.root:
            rel = os.path.relpath(a, self.root)
            if not rel.startswith(".."):
                return rel.replace(os.sep, "/")
        return posixpath.basename(a.replace(os.sep, "/"))

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
    declared = [pairs.get("images_root")]
    if not pairs.get("imported_from"):  # (an import's source is a name, not a folder)
        declared.insert(0, pairs.get("source"))
    paths = [p for p in paths if p]
    return Redactor(pool_root(paths, declared), label, names,
                    {_abs(p) for p in paths if _is_local_path(p)})
