"""Checks of an evolve run that look at the files themselves, before any work starts:

* the run folder, ``--local-dir`` and the eval images must lie outside the pool, and the pool
  outside the run folder (the pool is scanned recursively: a run inside it samples its own
  eval-image links and report.png as pool images, and trains on its own test set);
* every ``--eval`` manifest has a numeric MOS in every row and names images that decode;
* the contents of the pool and of the eval images, hashed, so that a rerun can tell that they
  changed since the run started (:func:`input_contents`).
"""

from __future__ import annotations

import math
from pathlib import Path

from evoq_data.core.errors import EvoqError

from .config import EvolveSettings, check_eval, eval_images, local_or_hub


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
    import pyarrow as pa
    import pyarrow.compute as pc

    from evoq_data.evaluate.metrics import _read_table
    from evoq_data.images.pool import check_image_bytes

    for spec in settings.evals:
        name, labels = check_eval(spec, deep=False)
        table = _read_table(labels)
        column = next(c for c in table.column_names if c.lower() == "mos")
        values = table.column(column)
        try:
            mos = pc.cast(values, pa.float64()).to_pylist()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            mos = []
            for v in values.to_pylist():
                try:
                    mos.append(float(v))
                except (TypeError, ValueError):
                    mos.append(None)
        for row, (v, raw) in enumerate(zip(mos, values.to_pylist(), strict=True)):
            if v is None or not math.isfinite(v):
                raise EvoqError(f"--eval {name}: {labels} row {row + 1}: MOS {raw!r} is not a "
                                "number")
        for image in eval_images(labels):
            try:
                check_image_bytes(image.read_bytes())
            except (OSError, ValueError) as exc:
                raise EvoqError(f"--eval {name}: {image} (named in {labels}) is not an image "
                                f"the judge can read: {exc}") from None


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
