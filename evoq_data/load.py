"""Reading a published evoq dataset back, whatever its image layout and version.

:func:`load_preferences` gives the ``preferences`` rows with ``image_a`` / ``image_b`` for
every layout of :mod:`evoq_data.publish.layouts`:

- ``embed``: the rows as ``datasets.load_dataset`` gives them;
- ``once``: the rows of ``preferences`` and, on access, each side's image looked up by id in
  the ``images`` config (a ``set_transform``: nothing is copied, an image is read from the
  memory-mapped ``images`` table when its row is read);
- ``none``: the files named by ``image_a_path`` / ``image_b_path``, found from
  ``images_root`` (default: the working directory), read when the row is read.

The layout is read from the columns, so every version evoq has published loads the same way.
"""

from __future__ import annotations

from pathlib import Path

from evoq_data.core.errors import EvoqError
from evoq_data.publish.layouts import layout_of_columns

SIDES = ("a", "b")


def _load_config(source: str, config: str, revision: str | None):
    import datasets

    folder = Path(source)
    if folder.is_dir() and revision is not None:
        from evoq_data.core.io import read_json

        held = (read_json(folder / "evoq.json", "dataset metadata", missing_ok=True)
                or {}).get("version")
        if held != revision:
            raise EvoqError(f"{source} holds version {held}, not {revision}: a local folder "
                            "holds one version (load the Hub repository for another)")
        revision = None
    if not folder.exists() and (source.startswith((".", "/")) or source.count("/") != 1):
        raise EvoqError(f"dataset not found: {source} (give a dataset folder written by "
                        "`evoq-data push --local-dir` or a Hub id)")
    try:
        return datasets.load_dataset(source, config, revision=revision, split="train")
    except (ValueError, FileNotFoundError, OSError) as exc:
        raise EvoqError(f"cannot load the '{config}' config of dataset {source}"
                        f"{'@' + revision if revision else ''}: {exc}") from exc


def _image_lookup(images):
    """image_id -> (the ``images`` rows as undecoded Arrow, row index)."""
    table = images.select_columns(["image_id", "image"]).with_format("arrow")
    ids = images.data.column("image_id").to_pylist()
    return table, {i: k for k, i in enumerate(ids)}


def _path_cells(prefs, root: Path, source: str) -> dict[str, list[dict]]:
    cells, lost = {}, []
    for side in SIDES:
        col = []
        for p in prefs.data.column(f"image_{side}_path").to_pylist():
            found = (root / p) if p and (root / p).is_file() else None
            if found is None:
                lost.append(p)
            col.append({"bytes": None, "path": str(found) if found else None})
        cells[side] = col
    if lost:
        raise EvoqError(f"dataset {source} has no images here: it publishes paths only "
                        f"(--images none) and {len(lost)} of them are not files under {root} "
                        f"(e.g. {lost[0]!r}); pass images_root= (or run from) the pool folder")
    return cells


def load_preferences(repo_or_dir: str | Path, revision: str | None = None,
                     config: str = "preferences", *, images_root: str | Path | None = None,
                     decode: bool = True, materialize: bool = False):
    """The ``preferences`` rows of a published dataset with ``image_a`` / ``image_b``.

    ``repo_or_dir``: a Hub id (``revision``: a tag such as ``v1``) or a ``--local-dir``
    folder. With ``decode=False`` the image cells are ``{"bytes", "path"}`` dicts, as
    ``datasets.Image(decode=False)`` gives them. With ``materialize=True`` the images become
    real ``datasets.Image`` columns (written once to the `datasets` cache), for code that maps
    or casts columns (``evoq-train``).
    """
    import datasets

    source = str(repo_or_dir)
    prefs = _load_config(source, config, revision)
    images = None
    if not {"image_a", "image_b"} <= set(prefs.column_names):
        images = _load_config(source, "images", revision)
    layout = layout_of_columns(prefs.column_names, images.column_names if images else None)
    if layout == "embed":
        if not decode:
            for side in SIDES:
                prefs = prefs.cast_column(f"image_{side}", datasets.Image(decode=False))
        return prefs
    feature = datasets.Image()
    if layout == "once":
        table, index = _image_lookup(images)
        ids = {side: prefs.data.column(f"image_{side}_id").to_pylist() for side in SIDES}
        missing = sorted({i for side in SIDES for i in ids[side] if i not in index})
        if missing:
            raise EvoqError(f"dataset {source}: {len(missing)} image id(s) of '{config}' are not "
                            f"in its 'images' config (e.g. {missing[0]})")
        rows = {side: [index[i] for i in ids[side]] for side in SIDES}
    else:
        cells = _path_cells(prefs, Path(images_root or "."), source)

    pair_ids = prefs.data.column("pair_id").to_pylist()
    position = {p: k for k, p in enumerate(pair_ids)}
    if len(position) != len(pair_ids):
        raise EvoqError(f"dataset {source}: '{config}' repeats a pair_id; not an evoq dataset")

    def cells_of(side: str, positions: list[int], decoded: bool) -> list:
        if layout == "once":
            raw = table[[rows[side][p] for p in positions]].column("image").to_pylist()
        else:
            raw = [cells[side][p] for p in positions]
        return [feature.decode_example(c) if decoded else c for c in raw]

    def joined(batch: dict, decoded: bool) -> dict:
        positions = [position[p] for p in batch["pair_id"]]
        out = {}
        for name, values in batch.items():
            out[name] = values
            if name == "pair_id":
                out.update({f"image_{s}": cells_of(s, positions, decoded) for s in SIDES})
        return out

    if materialize:
        features = {}
        for name, feat in prefs.features.items():
            features[name] = feat
            if name == "pair_id":
                features |= {"image_a": datasets.Image(), "image_b": datasets.Image()}
        prefs = prefs.map(lambda b: joined(dict(b), False), batched=True, batch_size=64,
                          features=datasets.Features(features),
                          desc="joining images")
        if not decode:
            for side in SIDES:
                prefs = prefs.cast_column(f"image_{side}", datasets.Image(decode=False))
        return prefs
    prefs.set_transform(lambda b: joined(b, decode))
    return prefs


def preference_rows(source: str | Path, columns: list[str], revision: str | None = None):
    """Only ``columns`` of the published ``preferences`` (no image bytes read), as rows."""
    prefs = _load_config(str(source), "preferences", revision)
    missing = [c for c in columns if c not in prefs.column_names]
    if missing:
        raise EvoqError(f"dataset {source} lacks column(s) {', '.join(missing)} in "
                        "'preferences'; is it an evoq dataset?")
    return prefs.data.select(columns).to_pylist()


def pseudo_mos_scores(source: str | Path, revision: str | None = None) -> dict[str, float]:
    """image_id -> pseudo-MOS of the ``pseudo_mos`` config (images without one left out)."""
    table = _load_config(str(source), "pseudo_mos", revision).data
    missing = [c for c in ("image_id", "pseudo_mos") if c not in table.column_names]
    if missing:
        raise EvoqError(f"dataset {source}: 'pseudo_mos' lacks {', '.join(missing)}")
    return {i: s for i, s in zip(table.column("image_id").to_pylist(),
                                 table.column("pseudo_mos").to_pylist(), strict=True)
            if s is not None}
