"""Synthetic distortions with a known quality order (the paper's round-2 pairs).

``evoq-data distort`` writes, for every reference image, five distortion types at five
severity levels each (level 1 mildest .. 5 strongest), plus the reference itself (level 0),
into one subfolder per reference (``<stem>-<id prefix>/``) with a manifest
``distortions.parquet``. ``evoq-data pairs --synthetic DIR`` then pairs variants **of the same reference and the same distortion type** (the reference
included) and records the known better image: the lower level. Variants of different types
(blur 3 against noise 2) have no known order, so no such pair is made.

Every variant is a pure function of (reference bytes, distortion, level, seed). Variants are
saved as PNG (lossless, so a JPEG variant keeps exactly its JPEG artefacts). A variant whose
bytes equal another image of the same reference (e.g. desaturating a grey photo) would be the
same image with a made-up order: it is dropped and counted.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image, ImageEnhance, ImageFilter

from evoq_data.core.errors import EvoqError
from evoq_data.core.ids import image_id as make_image_id
from evoq_data.core.io import write_json_atomic, write_parquet_atomic
from evoq_data.core.manifests import new_manifest
from evoq_data.images.decode import decode
from evoq_data.images.pool import images_of

log = logging.getLogger(__name__)

MANIFEST_NAME = "distortions.parquet"
LEVELS = (1, 2, 3, 4, 5)
# Severity parameters per level 1..5 (documented in docs/evaluate.md).
SEVERITY = {
    "blur": (0.5, 1.0, 1.5, 2.5, 4.0),           # Gaussian blur radius, pixels
    "noise": (0.02, 0.04, 0.07, 0.11, 0.16),     # Gaussian noise sigma, fraction of 255
    "jpeg": (60, 40, 25, 12, 5),                 # JPEG quality
    "contrast": (0.8, 0.65, 0.5, 0.35, 0.2),     # contrast factor (1 = unchanged)
    "saturation": (0.75, 0.55, 0.35, 0.15, 0.0), # colour factor (1 = unchanged, 0 = grey)
}
DISTORTIONS = tuple(SEVERITY)

MANIFEST_SCHEMA = pa.schema([
    ("image_id", pa.string()),        # sha256 of the written file
    ("path", pa.string()),            # absolute path of the written file
    ("reference_id", pa.string()),    # image_id of the reference (level 0 row)
    ("reference_path", pa.string()),  # where the reference came from
    ("distortion", pa.string()),      # 'reference' for level 0, else one of DISTORTIONS
    ("level", pa.int32()),            # 0 = reference, 1 mildest .. 5 strongest
    ("parameter", pa.float64()),      # the severity parameter used (null for the reference)
    ("seed", pa.int64()),
])
MANIFEST_COLUMNS = tuple(MANIFEST_SCHEMA.names)


def _rng(seed: int, reference_id: str, distortion: str, level: int) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}:{reference_id}:{distortion}:{level}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _blur(im: Image.Image, p: float, rng) -> Image.Image:
    return im.filter(ImageFilter.GaussianBlur(radius=p))


def _noise(im: Image.Image, p: float, rng) -> Image.Image:
    arr = np.asarray(im, dtype=np.float64)
    noisy = arr + rng.normal(0.0, p * 255.0, size=arr.shape)
    return Image.fromarray(np.clip(np.round(noisy), 0, 255).astype(np.uint8))


def _jpeg(im: Image.Image, p: float, rng) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=int(p))
    buf.seek(0)
    with Image.open(buf) as out:
        return out.convert("RGB")


def _contrast(im: Image.Image, p: float, rng) -> Image.Image:
    return ImageEnhance.Contrast(im).enhance(p)


def _saturation(im: Image.Image, p: float, rng) -> Image.Image:
    return ImageEnhance.Color(im).enhance(p)


APPLY: dict[str, Callable] = {"blur": _blur, "noise": _noise, "jpeg": _jpeg,
                              "contrast": _contrast, "saturation": _saturation}


def distort_image(im: Image.Image, distortion: str, level: int, *, seed: int = 0,
                  reference_id: str = "") -> Image.Image:
    """One distorted variant of an RGB image (level 1..5), deterministic given the seed."""
    if distortion not in SEVERITY:
        raise EvoqError(f"unknown distortion {distortion!r}; choose from {', '.join(DISTORTIONS)}")
    if level not in LEVELS:
        raise EvoqError(f"distortion level must be 1..5, got {level}")
    param = SEVERITY[distortion][level - 1]
    return APPLY[distortion](im.convert("RGB"), param, _rng(seed, reference_id, distortion, level))


def _png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def run_distort(images: str | Path, out: str | Path, *, distortions: list[str] | None = None,
                seed: int = 0, image_column: str = "image", split: str = "train",
                quiet: bool = False) -> dict:
    """The ``evoq-data distort`` stage: variants of every pool image plus a manifest."""
    from tqdm.auto import tqdm

    kinds = list(distortions or DISTORTIONS)
    unknown = [k for k in kinds if k not in SEVERITY]
    if unknown:
        raise EvoqError(f"unknown distortion(s) {', '.join(unknown)}; "
                        f"choose from {', '.join(DISTORTIONS)}")
    out = Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise EvoqError(f"--out {out} is an existing file; give a folder")
    pool = images_of(images, image_column=image_column, split=split,
                     cache_dir=out / ".pool-cache", quiet=quiet)
    rows = {name: [] for name in MANIFEST_COLUMNS}
    dropped = 0

    def add(image_id, path, ref, distortion, level, param):
        for name, value in zip(MANIFEST_COLUMNS, (image_id, str(path), ref.image_id, ref.path,
                                                  distortion, level, param, seed), strict=True):
            rows[name].append(value)

    for ref in tqdm(pool, desc="distort", unit="img", disable=quiet, dynamic_ncols=True):
        folder = out / f"{Path(ref.path).stem[:40]}-{ref.image_id[:8]}"
        folder.mkdir(parents=True, exist_ok=True)
        base = decode(ref.path, max_pixels=2**62)  # upright 8-bit RGB, as the judge sees it
        ref_path = folder / f"reference{Path(ref.path).suffix.lower()}"
        ref_path.write_bytes(Path(ref.path).read_bytes())  # same bytes, same image id
        add(ref.image_id, ref_path, ref, "reference", 0, None)
        seen = {ref.image_id}
        for kind in kinds:
            for level in LEVELS:
                data = _png_bytes(distort_image(base, kind, level, seed=seed,
                                                reference_id=ref.image_id))
                image_id = make_image_id(data)
                if image_id in seen:
                    dropped += 1
                    log.info("dropped %s level %d of %s: identical to another variant",
                                kind, level, ref.path)
                    continue
                seen.add(image_id)
                path = folder / f"{kind}-{level}.png"
                path.write_bytes(data)
                add(image_id, path, ref, kind, level, float(SEVERITY[kind][level - 1]))
    table = pa.table(rows, schema=MANIFEST_SCHEMA)
    manifest_file = write_parquet_atomic(table, out / MANIFEST_NAME)
    meta = new_manifest("distort", source=str(images), seed=seed,
                        distortions={k: list(SEVERITY[k]) for k in kinds}, references=len(pool),
                        variants=table.num_rows - len(pool), dropped_duplicates=dropped,
                        references_files=[ref.path for ref in pool])
    write_json_atomic(meta, out / "distort.json")
    return {"out": str(out), "manifest": str(manifest_file), "references": len(pool),
            "variants": table.num_rows - len(pool), "dropped_duplicates": dropped}


