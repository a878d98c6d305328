"""Checks of an evolve run that look at the files themselves, before any work starts:

* the run folder, ``--local-dir`` and the eval images must lie outside the pool, and the pool
  outside the run folder (the pool is scanned recursively: a run inside it samples its own
  eval-image links and report.png as pool images, and trains on its own test set);
* every ``--eval`` manifest has a numeric MOS in every row and names images that decode;
* the ``--pool-labels`` file is readable, has one numeric MOS per image (or is a distortions
  manifest, a known order) and names only images of the pool;
* the contents of the pool and of the eval images, hashed, so that a rerun can tell that they
  changed since the run started (:func:`input_contents`).
"""

from __future__ import annotations

import math
from pathlib import Path

from evoq_data.core.errors import EvoqError

from .config import EvolveSettings, check_eval, check_pool_labels_file, eval_images, local_or_hub


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def local_pool(settings: EvolveSettings) -> Path | None:
    """The pool folder (resolved), or None for a Hub dataset."""
    kind, path = local_or_hub(settings.pool, "--pool", want="dir_or_file")
    return path if kind == "local" and path.is_dir() else None


def check_places(settings: EvolveSettings) -> None:
    """One line when the run, --local-dir or an eval image is inside the pool, or the pool
    inside the run."""
    pool = local_pool(settings)
    if pool is None:
        return
    run = Path(settings.run_dir).expanduser().resolve()
    why = ("evoq-data pairs reads the pool recursively, so every round would sample the "
           "run's own files (eval images, report.png) as pool images")
    if _inside(run, pool):
        raise EvoqError(f"--run-dir {run} is inside --pool {pool}: {why}; give a run folder "
                        "outside the pool")
    if _inside(pool, run):
        raise EvoqError(f"--pool {pool} is inside --run-dir {run}: give a pool outside the "
                        "run folder")
    if settings.local_dir:
        local = Path(settings.local_dir).expanduser().resolve()
        if _inside(local, pool):
            raise EvoqError(f"--local-dir {local} is inside --pool {pool}: the published "
                            "versions would become pool images; give a folder outside the pool")
    for spec in settings.evals:
        name, labels = check_eval(spec, deep=False)
        for image in eval_images(labels):
            real = image.resolve()
            if _inside(real, pool):
                raise EvoqError(f"--eval {name}: image {image} is inside --pool {pool}: the "
                                "model would be trained on its own test set; give eval images "
                                "outside the pool")


def check_eval_contents(settings: EvolveSettings) -> None:
    """Every --eval manifest: a finite numeric MOS in every row, and images that decode as
    the judge will see them; else one line naming the file and row."""
    from evoq_data.evaluate.labels import read_label_table
    from evoq_data.images.pool import check_image_bytes

    for spec in settings.evals:
        name, labels = check_eval(spec, deep=False)
        table = read_label_table(labels)
        column = next(c for c in table.column_names if c.lower() == "mos")
        values = table.column(column)
        for row, (v, raw) in enumerate(zip(_numbers(values), values.to_pylist(), strict=True)):
            if v is None:
                raise EvoqError(f"--eval {name}: {labels} row {row + 1}: MOS {raw!r} is not a "
                                "number")
        for image in eval_images(labels):
            try:
                check_image_bytes(image.read_bytes())
            except (OSError, ValueError) as exc:
                raise EvoqError(f"--eval {name}: {image} (named in {labels}) is not an image "
                                f"the judge can read: {exc}") from None


def _numbers(values) -> list[float | None]:
    """A column's values as floats (None where a value is not a finite number)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        out = pc.cast(values, pa.float64()).to_pylist()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        out = []
        for v in values.to_pylist():
            try:
                out.append(float(v))
            except (TypeError, ValueError):
                out.append(None)
    return [v if v is not None and math.isfinite(v) else None for v in out]


def is_distortions(path: Path) -> bool:
    """A Parquet file that is the manifest of `evoq-data distort` (a known order)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.suffix.lower() != ".parquet":
        return False
    try:
        names = pq.read_schema(path).names
    except (pa.ArrowInvalid, OSError) as exc:
        raise EvoqError(f"--pool-labels {path}: cannot read it: {exc}") from None
    return {"reference_id", "distortion", "level"} <= set(names)


def pool_label_ids(path: Path) -> dict[str, int]:
    """The images a --pool-labels file labels, by image id, with the row (from 1) that first
    names each; one line for a file that cannot be read, a row whose MOS is not a number, or
    an image listed twice with different MOS."""
    from evoq_data.evaluate.labels import check_label_rows, manifest_labels, read_label_table

    if is_distortions(path):
        from evoq_data.pairs.synthetic import read_distortions

        try:
            ids = read_distortions(path).column("image_id").to_pylist()
        except EvoqError as exc:
            raise EvoqError(f"--pool-labels: {exc}") from None
        return {i: row for row, i in reversed(list(enumerate(ids, start=1)))}
    try:
        table = read_label_table(path)
        column = next((c for c in table.column_names if c.lower() == "mos"), None)
        if column is None:
            raise EvoqError(f"labels {path} have no 'mos' column (columns: "
                            f"{', '.join(table.column_names)})")
        values = table.column(column)
        for row, (v, raw) in enumerate(zip(_numbers(values), values.to_pylist(),
                                           strict=True), start=1):
            if v is None:
                raise EvoqError(f"{path} row {row}: MOS {raw!r} is not a number")
        ids, mos, keys = manifest_labels(path, column)
        check_label_rows(path.stem, str(path), ids, mos, keys)  # one MOS per image
    except EvoqError as exc:
        raise EvoqError(f"--pool-labels: {exc}") from None
    first: dict[str, int] = {}
    for row, i in enumerate(ids, start=1):
        first.setdefault(i, row)
    return first


def check_pool_labels(settings: EvolveSettings) -> None:
    """The --pool-labels file: readable, numeric, one MOS per image, and every image it
    names an image of the (local) pool; else one line naming the file and rows."""
    if settings.pool_labels is None:
        return
    from evoq_data.core.ids import file_sha256
    from evoq_data.evaluate.labels import SHOWN_ROWS
    from evoq_data.images.pool import scan_folder

    path = check_pool_labels_file(settings.pool_labels)
    pool = local_pool(settings)
    if pool is None:
        raise EvoqError(f"--pool-labels {path} needs a local --pool folder (its images are "
                        f"checked against the labels); {settings.pool} is not one")
    labelled = pool_label_ids(path)
    in_pool = {file_sha256(f) for f in scan_folder(pool)}
    outside = sorted(row for i, row in labelled.items() if i not in in_pool)
    if outside:
        shown = ", ".join(map(str, outside[:SHOWN_ROWS])) + (
            f" and {len(outside) - SHOWN_ROWS} more" if len(outside) > SHOWN_ROWS else "")
        raise EvoqError(f"--pool-labels {path}: {len(outside)} labelled image(s) are not "
                        f"images of --pool {pool} (row(s) {shown}); label the pool's images")


def _tree(files: list[tuple[str, Path]]) -> str:
    from evoq_data.core.ids import file_sha256

    from .state import tree_hash

    return tree_hash({rel: file_sha256(path) for rel, path in files})


def input_contents(settings: EvolveSettings) -> dict:
    """What the run reads, by content: the pool's image files (for a folder) and each eval
    set's images, as ``{"pool": {"images", "sha256"}, "evals": {name: {...}}}``."""
    from evoq_data.images.pool import scan_folder

    out: dict = {"pool": None, "evals": {}}
    pool = local_pool(settings)
    if pool is not None:
        files = scan_folder(pool)
        out["pool"] = {"images": len(files),
                       "sha256": _tree([(p.relative_to(pool).as_posix(), p) for p in files])}
    for spec in settings.evals:
        name, labels = check_eval(spec, deep=False)
        images = eval_images(labels)
        out["evals"][name] = {"images": len(images),
                              "sha256": _tree([(str(i), p) for i, p in enumerate(images)])}
    return out
