"""vLLM's engine inputs of the prompts a caller will ask again, each rendered once
(:class:`KeptInputs`, kept by the ``vllm`` engine, :mod:`evoq_data.generation.engines.vllm`)."""

from __future__ import annotations

from collections.abc import Callable

from evoq_data.generation.engines import BytesLRU, GenRequest, prompt_key


class KeptInputs:
    """vLLM's engine inputs of the prompts the caller will ask again, each rendered once.

    vLLM's front end renders every request anew: its multimodal processor parses the images,
    looks them up in its caches and expands their placeholders, about 1 ms a request on CPU
    (bench/vllm_front_end.py), in the thread that runs the engine's steps on CPU. A ``--stop``
    pair asks the same two prompts (one per shown order) in every wave, so a run's many small
    waves multiply that cost. Here the input rendered for a request with ``asked_again`` is
    kept until a request for the same prompt comes without it (the pair's last wave); a pair
    that stopped earlier leaves its inputs behind, and those go first (least recently used)
    once the kept inputs' image tensors pass ``max_bytes``. Keyed by
    :func:`~evoq_data.generation.engines.prompt_key`: images without ids are rendered every
    time."""

    def __init__(self, max_bytes: int = 512 * 2**20) -> None:
        self._kept = BytesLRU(max_bytes, _tensor_bytes)
        self.rendered = 0  # inputs rendered (for tests and the bench)

    def get(self, req: GenRequest, render: Callable[[GenRequest], dict]) -> dict:
        """``req``'s engine input: the kept one, else ``render(req)`` (kept when asked
        again)."""
        key = prompt_key(req)
        engine_input = self._kept.pop(key) if key is not None else None
        if engine_input is None:
            engine_input = render(req)
            self.rendered += 1
        if key is not None and req.asked_again:
            self._kept.put(key, engine_input)
        return engine_input

    def __len__(self) -> int:
        return len(self._kept)


def _tensor_bytes(engine_input: dict) -> int:
    """The bytes of an engine input's processed images (vLLM's own measure of them)."""
    from vllm.multimodal.cache.base import MultiModalCache

    mm = engine_input.get("mm_kwargs")
    return MultiModalCache.get_item_size(mm) if mm else 0
