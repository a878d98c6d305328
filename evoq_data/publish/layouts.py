"""How a published version stores its images: the layouts of ``evoq-data push --images``.

- ``embed``: ``preferences`` embeds both images of every pair (``image_a``, ``image_b``) and
  ``images`` holds each image once; every row loads with its images straight from
  ``datasets.load_dataset``. An image's bytes are stored once plus once per pair it is in.
- ``once``: ``preferences`` names its images by id only and ``images`` holds every image
  once; :func:`evoq_data.load.load_preferences` joins them on access.
- ``none``: no image bytes; the ``*_path`` columns name the files.

A version records its layout in ``evoq.json`` (``images``); versions published before the
layouts existed record only ``embed_images`` (true = ``embed``, false = ``none``).
"""

from __future__ import annotations

from evoq_data.core.errors import EvoqError

IMAGE_LAYOUTS = ("embed", "once", "none")
DEFAULT_LAYOUT = "embed"


def resolve_layout(images: str | None, embed_images: bool | None = None) -> str:
    """The layout of a push from ``--images`` and the older ``--embed-images/--no-embed-images``
    (``--no-embed-images`` is ``--images none``); contradicting flags are refused."""
    if images is not None and images not in IMAGE_LAYOUTS:
        raise EvoqError(f"unknown --images {images!r}: choose one of {', '.join(IMAGE_LAYOUTS)}")
    if embed_images is False:
        if images not in (None, "none"):
            raise EvoqError(f"--no-embed-images means --images none; it contradicts "
                            f"--images {images}: give one of them")
        return "none"
    return images or DEFAULT_LAYOUT


def layout_of_meta(meta: dict) -> str | None:
    """The layout an ``evoq.json`` records, or None when it records none."""
    if meta.get("images") in IMAGE_LAYOUTS:
        return meta["images"]
    if isinstance(meta.get("embed_images"), bool):
        return "embed" if meta["embed_images"] else "none"
    return None


def layout_of_columns(preferences: list[str], images: list[str] | None) -> str:
    """The layout a version's columns show (for folders whose evoq.json is not at hand)."""
    if {"image_a", "image_b"} <= set(preferences):
        return "embed"
    if images is not None and "image" in images:
        return "once"
    return "none"


def check_once_covers(preferences, images) -> int:
    """``once`` stores a pair's images only in ``images``: every image a pair names must be
    there (else the pair would lose its images). Returns the image bytes ``preferences``
    stores (none)."""
    have = set(images.column("image_id").to_pylist())
    lost = sorted({i for side in "ab" for i in preferences.column(f"image_{side}_id").to_pylist()}
                  - have)
    if lost:
        raise EvoqError(f"--images once: {len(lost)} image(s) of preferences.parquet are not in "
                        f"images.parquet (e.g. {lost[0]}); their pairs would have no image: "
                        "push with --images embed or re-run `evoq-data aggregate`")
    return 0
