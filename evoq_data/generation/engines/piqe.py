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

PIQE is deterministic: every request gets ``n`` identical answers, whatever the seed or the
sampling settings. Scores are cached per image path for the engine's lifetime.
"""

from __future__ import annotations

import logging

from evoq_data.core.errors import EvoqError, require
from evoq_data.generation.engines import GenRequest, Sampling, load_image

log = logging.getLogger(__name__)

PIQE_MAX = 100.0


def piqe_to_score(value: float) -> float:
    """PIQE (0 best .. 100 worst) -> the score prompt's scale [1, 5], two decimals."""
    clipped = min(max(float(value), 0.0), PIQE_MAX)
    return round(5.0 - 4.0 * clipped / PIQE_MAX, 2)


class PiqeEngine:
    name = "piqe"

    def __init__(self, model: str | None = None, *, model_revision: str | None = None) -> None:
        self._piqe = require("pypiqe", "piqe").piqe
        self.model = "piqe"
        # The judge has no weights: by default its "revision" is the implementation's
        # version; a caller that already recorded a revision in its manifest passes it.
        self.model_revision = model_revision or piqe_revision()
        self._cache: dict[str, float] = {}

    def piqe(self, path: str, expected_id: str | None = None) -> float:
        """PIQE of one image file (cached), on the pixels every engine sees."""
        if path not in self._cache:
            import numpy as np

            rgb = np.asarray(load_image(path, expected_id))
            # pypiqe follows OpenCV and expects BGR channel order.
            self._cache[path] = float(self._piqe(np.ascontiguousarray(rgb[:, :, ::-1]))[0])
        return self._cache[path]

    def _answer(self, request: GenRequest) -> str:
        pid = request.prompt.prompt_id
        reasoning = request.prompt.reasoning
        if pid.startswith("compare-"):
            ids = request.image_ids or (None, None)
            first, second = (self.piqe(p, i) for p, i in zip(request.images, ids, strict=True))
            note = f"PIQE first={first:.2f} second={second:.2f} (lower is better)"
            if first == second:
                return f"<think>{note}: a tie, no preference</think>" if reasoning else \
                    f"{note}: a tie, no preference"
            answer = 0 if first < second else 1
        elif pid.startswith("score-"):
            value = self.piqe(request.images[0], (request.image_ids or (None,))[0])
            note = f"PIQE={value:.2f} on 0 (best) to 100 (worst); score = 5 - 4 * PIQE / 100"
            answer = f"{piqe_to_score(value):.2f}"
        else:
            raise EvoqError(f"piqe engine does not know prompt {pid!r} (compare-* or score-*)")
        return f"<think>{note}</think> \\boxed{{{answer}}}" if reasoning else str(answer)

    def generate(self, requests: list[GenRequest], sampling: Sampling) -> list[list[str]]:
        return [[self._answer(req)] * req.n for req in requests]

    def close(self) -> None:
        self._cache.clear()


def piqe_revision() -> str:
    """``pypiqe==<version>``: what identifies this judge's answers."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"pypiqe=={version('pypiqe')}"
    except PackageNotFoundError:  # pragma: no cover - imported by the engine, so installed
        return "pypiqe"
