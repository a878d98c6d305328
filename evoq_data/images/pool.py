"""Image pools: find images in a folder or a Hugging Face dataset, hash, validate, dedupe.

An image's id is the sha256 (hex) of its file bytes, so identical files are one image wherever
they sit. Images that cannot be decoded, are truncated, or exceed the pixel limit (a guard
against decompression bombs) are skipped, counted and named in the pool report; the run goes on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from evoq_data.core.errors import EvoqError
from evoq_data.core.ids import image_id
from evoq_data.images.decode import DEFAULT_MAX_PIXELS, decode

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class PoolImage:
    image_id: str
    path: str
    width: int
    height: int


@dataclass
class PoolReport:
    source: str
    files_seen: int = 0
    images: int = 0
    duplicates: int = 0
    symlinked_folders: int = 0  # symlinked sub-folders followed
    symlink_loops_skipped: int = 0  # links back to a folder already scanned
    skipped: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["skipped_count"] = len(self.skipped)
        return d


def check_image_bytes(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """Decode fully, as the judge will (:func:`evoq_data.images.decode.decode`), and return the
    upright (width, height); raise ValueError with the reason otherwise."""
    return decode(data, max_pixels).size


def _inspect(path: Path, max_pixels: int) -> tuple[PoolImage | None, dict | None]:
    try:
        data = path.read_bytes()
        w, h = check_image_bytes(data, max_pixels)
    except (OSError, ValueError) as exc:
        return None, {"path": str(path), "reason": str(exc)}
    return PoolImage(image_id(data), str(path), w, h), None


def scan_folder(folder: Path, report: PoolReport | None = None) -> list[Path]:
    """Image files below ``folder``, recursively, following symlinked folders (a link to a
    folder already visited, such as a loop back to a parent, is skipped and counted)."""
    files: list[Path] = []
    visited: set[str] = set()
    for root, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in visited:  # a loop or a second link to the same folder
            dirs[:] = []
            if report is not None:
                report.symlink_loops_skipped += 1
            log.info("skipped %s: a link to a folder already scanned", root)
            continue
        visited.add(real)
        if report is not None and root != str(folder) and os.path.islink(root):
            report.symlinked_folders += 1
        dirs.sort()
        files += [Path(root) / n for n in names if Path(n).suffix.lower() in IMAGE_EXTENSIONS
                  and (Path(root) / n).is_file()]
    return sorted(files)


def _collect(paths: Iterable[Path], report: PoolReport, max_pixels: int, quiet: bool):
    from tqdm.auto import tqdm

    paths = list(paths)
    report.files_seen = len(paths)
    by_id: dict[str, PoolImage] = {}
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = pool.map(lambda p: _inspect(p, max_pixels), paths)
        for img, skip in tqdm(results, total=len(paths), desc="images", unit="img",
                              disable=quiet, leave=False):
            if skip is not None:
                report.skipped.append(skip)
                log.info("skipped %s: %s", skip["path"], skip["reason"])  # the CLI reports it
            elif img.image_id in by_id:
                report.duplicates += 1
            else:
                by_id[img.image_id] = img
    images = sorted(by_id.values(), key=lambda im: im.image_id)
    report.images = len(images)
    return images


def _looks_like_dataset(folder: Path) -> bool:
    markers = ("dataset_info.json", "state.json", "dataset_dict.json", "README.md")
    return any((folder / m).is_file() for m in markers) and not any(
        p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.iterdir() if p.is_file()
    )


def _dataset_image_files(source: str, image_column: str, split: str, cache_dir: Path,
                         max_pixels: int, report: PoolReport) -> list[Path]:
    """Materialise a Hugging Face dataset's image column as files named by content hash."""
    import datasets

    try:
        path = Path(source)
        if path.is_dir() and ((path / "dataset_info.json").is_file()
                              or (path / "dataset_dict.json").is_file()):
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                ds = ds[split]
        else:
            ds = datasets.load_dataset(source, split=split)
    except Exception as exc:  # noqa: BLE001 - datasets raises many types
        raise EvoqError(f"cannot load dataset {source!r} (split {split!r}): {exc}") from exc
    if image_column not in ds.column_names:
        raise EvoqError(
            f"dataset {source!r} has no column {image_column!r} (columns: "
            f"{', '.join(ds.column_names)}); pass --image-column"
        )
    try:
        ds = ds.cast_column(image_column, datasets.Image(decode=False))
    except (ValueError, TypeError, NotImplementedError) as exc:  # pyarrow's cast errors
        raise EvoqError(f"column {image_column!r} of dataset {source!r} does not hold images "
                        f"({ds.features[image_column]}); pass --image-column") from exc
    cache_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for i, row in enumerate(ds):
        cell = row[image_column] or {}
        data = cell.get("bytes")
        if data is None and cell.get("path"):
            try:
                data = Path(cell["path"]).read_bytes()
            except OSError as exc:
                report.skipped.append({"path": f"{source}[{i}]", "reason": str(exc)})
                continue
        if data is None:
            report.skipped.append({"path": f"{source}[{i}]", "reason": "empty image cell"})
            continue
        ext = Path(cell.get("path") or "x.png").suffix.lower()
        ext = ext if ext in IMAGE_EXTENSIONS else ".img"
        out = cache_dir / f"{image_id(data)}{ext}"
        if not out.exists():
            out.write_bytes(data)
        files.append(out)
    return files


def load_pool(source: str | Path, *, image_column: str = "image", split: str = "train",
              cache_dir: str | Path | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
              quiet: bool = False) -> tuple[list[PoolImage], PoolReport]:
    """Find, validate and dedupe the images of SOURCE (a folder or a HF dataset)."""
    source = str(source)
    report = PoolReport(source=source)
    path = Path(source)
    if path.is_dir() and not _looks_like_dataset(path):
        files = scan_folder(path, report)
        if not files:
            raise EvoqError(
                f"no images in {path} (looked recursively for {', '.join(IMAGE_EXTENSIONS)})"
            )
    elif path.exists() and not path.is_dir():
        raise EvoqError(f"image source {path} is a file; give a folder or a dataset")
    elif not path.exists() and ("/" not in source or source.startswith((".", "/"))):
        raise EvoqError(f"image folder not found: {source}")
    else:
        cache = Path(cache_dir) if cache_dir else Path(".evoq-cache") / "pool-images"
        files = _dataset_image_files(source, image_column, split, cache, max_pixels, report)
    images = _collect(files, report, max_pixels, quiet)
    if not images:
        raise EvoqError(f"the pool {source} has no usable image ({len(report.skipped)} "
                        "skipped, named above or in the log)")
    return images, report


def single_image(path: Path) -> PoolImage:
    """One image file, checked like a pool image (its path made absolute)."""
    try:
        data = path.read_bytes()
        w, h = check_image_bytes(data)
    except (OSError, ValueError) as exc:
        raise EvoqError(f"cannot read image {path}: {exc}") from exc
    return PoolImage(image_id(data), str(path.resolve()), w, h)


def images_of(source: str | Path, *, image_column: str = "image", split: str = "train",
              cache_dir: Path | None = None, quiet: bool = False) -> list[PoolImage]:
    """The images of an image file, a folder or a HF dataset, with absolute paths (what
    ``score`` and ``distort`` work on); skipped files are logged as warnings."""
    path = Path(source)
    if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
        return [single_image(path)]
    pool, report = load_pool(source, image_column=image_column, split=split,
                             cache_dir=cache_dir, quiet=quiet)
    for skip in report.skipped:
        log.warning("skipped %s: %s", skip["path"], skip["reason"])
    return [PoolImage(im.image_id, str(Path(im.path).resolve()), im.width, im.height)
            for im in pool]
