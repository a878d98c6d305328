"""The ``piqe`` engine: a classical judge (PIQE, Venkatanath et al. 2015) with no weights.

PIQE is a no-reference quality score in [0, 100], lower is better, computed on CPU by the
``pypiqe`` package. The engine answers the same prompts a VLM gets, in the text form a VLM
would write, so its answers flow through the normal parser and vote store:

- compare prompt (``compare-*``): ``<think>PIQE first=23.10 second=41.70 (lower is better)
  </think> \\boxed{0}``; with the reasoning suffix off, just ``0`` / ``1`` after the same note.
- score prompt (``score-*``): PIQE mapped linearly to ``5 - 4 * piqe / 100`` (0 -> 5.00,
  100 -> 1.00), rounded to two decimals and boxed.

An exact tie (both images get the same PIQE score, e.g. both saturate at 100) has no honest
answer: the engine says so and writes no answer at all, so the parser records it as an
invalid vote (``no_box`` / ``no_answer``) rather than a made-up preference.

PIQE is deterministic: by default every request gets ``n`` identical answers, whatever the
seed or the sampling settings. Scores are cached per image path for the engine's lifetime.

``random_crop=F`` (``--engine-arg random_crop=0.7``, F in (0, 1], off by default) makes the
judge stochastic, so its votes disagree as a sampling VLM's do: sample ``i`` of a request
seeded ``s`` scores each image on a crop drawn by ``numpy.random.default_rng(s + i)`` (the
first image's crop, then the second's) that keeps ``round(F * side)`` of PIQE's 16 x 16 blocks
along each side (at least one) at a uniformly random offset. PIQE is a pooled sum over blocks,
so the engine computes the block scores of each image once (PIQE's own steps: grey levels,
scaled to 0-255, local normalisation of the whole image, the library's per-block criteria) and
pools those inside the crop: ``100 * (sum of distortion scores + 1) / (active blocks + 1)``.
This is PIQE of the crop except at the crop's border, where the local normalisation still
sees the pixels outside it; with F = 1 the crop is the whole image and the score is the
library's exactly. A vote is a pure function of (image, seed + i, F), so runs stay
deterministic and resumable. The model is recorded as ``piqe+random_crop=F``.
"""

from __future__ import annotations

import logging

from evoq_data.core.errors import EvoqError, require
from evoq_data.generation.engines import GenRequest, Sampling, load_image

log = logging.getLogger(__name__)

PIQE_MAX = 100.0
BLOCK = 16  # PIQE's block size


def check_random_crop(value) -> float | None:
    """``random_crop`` as a float in (0, 1], or None (off); a one-line error otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise EvoqError(f"piqe engine: random_crop must be a number in (0, 1] (the kept "
                        f"fraction of each side), got {value!r}")
    return float(value)


def piqe_model_name(random_crop: float | None) -> str:
    """The judge's name as recorded with its votes: ``piqe`` or ``piqe+random_crop=F``."""
    value = check_random_crop(random_crop)
    return "piqe" if value is None else f"piqe+random_crop={value:g}"


def piqe_blocks(bgr):
    """PIQE's per-block quantities of an image (pypiqe's own steps, kept per block):
    (distortion score, active) arrays over the 16 x 16 block grid of the padded image."""
    import importlib

    import cv2
    import numpy as np

    lib = importlib.import_module("pypiqe.piqe")
    image = lib.validateInputImage(bgr)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    rows, cols = image.shape[:2]
    pad_r, pad_c = (-rows) % BLOCK, (-cols) % BLOCK
    if pad_r or pad_c:
        image = np.pad(image, ((0, pad_r), (0, pad_c)), mode="symmetric")
    image = np.round(255 * (image / np.max(image)))
    mu = cv2.GaussianBlur(image, ksize=(7, 7), sigmaX=7 / 6, borderType=cv2.BORDER_REPLICATE)
    sigma = np.sqrt(np.abs(cv2.GaussianBlur(image * image, ksize=(7, 7), sigmaX=7 / 6,
                                            borderType=cv2.BORDER_REPLICATE) - mu * mu))
    norm = (image - mu) / (sigma + 1)
    grid = (norm.shape[0] // BLOCK, norm.shape[1] // BLOCK)
    dist, active = np.zeros(grid), np.zeros(grid, dtype=bool)
    for bi in range(grid[0]):
        for bj in range(grid[1]):
            block = norm[bi * BLOCK:(bi + 1) * BLOCK, bj * BLOCK:(bj + 1) * BLOCK]
            var = np.var(block, ddof=1)
            if var > 0.1:
                impaired = 1 if lib.noticeDistCriterion(block, BLOCK - 6 + 1, BLOCK - 1, 6,
                                                        0.1, BLOCK) else 0
                block_sigma, block_beta = lib.noiseCriterion(block, BLOCK - 1, var)
                noisy = 1 if block_sigma > 2 * block_beta else 0
                active[bi, bj] = True
                dist[bi, bj] = 1 * impaired * (1 - var) + 1 * noisy * var
    return dist, active


def pooled_piqe(dist, active, top: int, left: int, height: int, width: int) -> float:
    """PIQE pooled over a window of blocks, summed in the library's (row-major) order."""
    total, count = 0, 0
    for bi in range(top, top + height):
        for bj in range(left, left + width):
            if active[bi, bj]:
                total += float(dist[bi, bj])
                count += 1
    return ((total + 1) / (1 + count)) * 100


def piqe_to_score(value: float) -> float:
    """PIQE (0 best .. 100 worst) -> the score prompt's scale [1, 5], two decimals."""
    clipped = min(max(float(value), 0.0), PIQE_MAX)
    return round(5.0 - 4.0 * clipped / PIQE_MAX, 2)


class PiqeEngine:
    name = "piqe"

    def __init__(self, model: str | None = None, *, model_revision: str | None = None,
                 random_crop: float | None = None) -> None:
        self._piqe = require("pypiqe", "piqe").piqe
        self.random_crop = check_random_crop(random_crop)
        self.model = piqe_model_name(self.random_crop)
        # The judge has no weights: by default its "revision" is the implementation's
        # version; a caller that already recorded a revision in its manifest passes it.
        self.model_revision = model_revision or piqe_revision()
        self._cache: dict[str, float] = {}
        self._blocks: dict[str, tuple] = {}

    @staticmethod
    def _bgr(path: str, expected_id: str | None = None):
        """The pixels every engine sees (upright 8-bit RGB, checked against the image id),
        in the BGR channel order pypiqe expects (it follows OpenCV)."""
        import numpy as np

        rgb = np.asarray(load_image(path, expected_id))
        return np.ascontiguousarray(rgb[:, :, ::-1])

    def piqe(self, path: str, expected_id: str | None = None) -> float:
        """PIQE of one image file (cached), on the pixels every engine sees."""
        if path not in self._cache:
            self._cache[path] = float(self._piqe(self._bgr(path, expected_id))[0])
        return self._cache[path]

    def crop_piqe(self, path: str, rng, expected_id: str | None = None) -> float:
        """PIQE of one image on a random block-aligned crop keeping ``random_crop`` of each
        side (the module docstring says how)."""
        if path not in self._blocks:
            self._blocks[path] = piqe_blocks(self._bgr(path, expected_id))
        dist, active = self._blocks[path]
        rows, cols = dist.shape
        height = max(1, round(self.random_crop * rows))
        width = max(1, round(self.random_crop * cols))
        top = int(rng.integers(0, rows - height + 1))
        left = int(rng.integers(0, cols - width + 1))
        return pooled_piqe(dist, active, top, left, height, width)

    def _scores(self, request: GenRequest, sample: int) -> list[float]:
        ids = request.image_ids or (None,) * len(request.images)
        if self.random_crop is None:
            return [self.piqe(p, i) for p, i in zip(request.images, ids, strict=True)]
        import numpy as np

        rng = np.random.default_rng(request.seed + sample)
        return [self.crop_piqe(p, rng, i) for p, i in zip(request.images, ids, strict=True)]

    def _answer(self, request: GenRequest, sample: int = 0) -> str:
        pid = request.prompt.prompt_id
        reasoning = request.prompt.reasoning
        crop = "" if self.random_crop is None else \
            f" on random crops keeping {self.random_crop:g} of each side"
        if pid.startswith("compare-"):
            first, second = self._scores(request, sample)
            note = f"PIQE first={first:.2f} second={second:.2f}{crop} (lower is better)"
            if first == second:
                return f"<think>{note}: a tie, no preference</think>" if reasoning else \
                    f"{note}: a tie, no preference"
            answer = 0 if first < second else 1
        elif pid.startswith("score-"):
            [value] = self._scores(request, sample)
            note = f"PIQE={value:.2f}{crop} on 0 (best) to 100 (worst); score = 5 - 4 * PIQE / 100"
            answer = f"{piqe_to_score(value):.2f}"
        else:
            raise EvoqError(f"piqe engine does not know prompt {pid!r} (compare-* or score-*)")
        return f"<think>{note}</think> \\boxed{{{answer}}}" if reasoning else str(answer)

    def generate(self, requests: list[GenRequest], sampling: Sampling) -> list[list[str]]:
        if self.random_crop is None:
            return [[self._answer(req)] * req.n for req in requests]
        return [[self._answer(req, i) for i in range(req.n)] for req in requests]

    def close(self) -> None:
        self._cache.clear()
        self._blocks.clear()


def piqe_revision() -> str:
    """``pypiqe==<version>``: what identifies this judge's answers."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"pypiqe=={version('pypiqe')}"
    except PackageNotFoundError:  # pragma: no cover - imported by the engine, so installed
        return "pypiqe"
