"""Prompt prefixes for the ``transformers`` engine: a prompt's vision features and the KV
cache of its tokens but the last, computed once per prompt and shared by all its samples.

HF ``generate`` with ``num_return_sequences = n`` copies the prompt ``n`` times before its
first forward pass, so a request prefills ``n x L`` prompt tokens, and every wave of
``--stop`` runs the vision encoder and the prefill again. Here the first ``L - 1`` tokens of
a prompt run once, in a batch of one (so a prefix never depends on what it is batched with),
and each sample continues from a copy of that cache: ``generate`` gets the whole prompt, the
cache of its first ``L - 1`` tokens and the position ids ``generate`` itself makes for the
prompt (the text positions, then Qwen2.5-VL's 3D rope positions from ``get_rope_index``), so
it computes the last prompt token and the answer only, at the positions of a plain call.

:class:`PrefixStore` keeps the prefixes of prompts the caller says it will ask again
(``GenRequest.asked_again``: a ``--stop`` wave with waves left) until a call asks for them
without it (their last wave) or does not ask for them at all (the pair or image stopped);
others are freed once their batch is decoded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from evoq_data.generation.engines import GenRequest, prompt_key


@dataclass(frozen=True)
class Prefix:
    """One prompt, ready to continue: its tokens, its position ids and the KV cache of all its
    tokens but the last."""

    input_ids: Any  # (1, L) the whole prompt
    position_ids: Any  # (4, 1, L): text positions, then the 3D rope positions
    kv: tuple  # per layer (keys, values), each (1, kv_heads, L - 1, head_dim)

    @property
    def length(self) -> int:
        return int(self.input_ids.shape[1])


def compute_prefix(engine, req: GenRequest) -> Prefix:
    """Run the vision encoder and the prompt's first ``L - 1`` tokens once (batch of one)."""
    from transformers import DynamicCache

    torch, net = engine.torch, engine.net
    inputs = engine._inputs(req)
    ids = inputs["input_ids"]
    text = torch.arange(ids.shape[1], device=ids.device).view(1, 1, -1)
    images = {k: inputs[k] for k in ("pixel_values", "image_grid_thw") if k in inputs}
    with torch.inference_mode():
        if "image_grid_thw" in images:
            rope, _ = net.model.get_rope_index(
                ids, mm_token_type_ids=inputs["mm_token_type_ids"],
                image_grid_thw=images["image_grid_thw"], attention_mask=inputs["attention_mask"])
        else:
            rope = text.expand(3, -1, -1)
        position_ids = torch.cat([text, rope.to(text.dtype)], dim=0)
        cache = DynamicCache(config=net.config)
        net.model(input_ids=ids[:, :-1], position_ids=position_ids[..., :-1],
                  past_key_values=cache, use_cache=True, **images)
    kv = tuple((layer.keys, layer.values) for layer in cache.layers)
    return Prefix(ids, position_ids, kv)


def expand_prefixes(torch, prefixes: list[Prefix], rows: list[int], config):
    """The inputs of one ``generate`` call: prompt ``i`` repeated ``rows[i]`` times (all the
    same length): input ids, position ids and a fresh cache (the prefixes are not touched)."""
    from transformers import DynamicCache

    ids = torch.cat([p.input_ids.expand(r, -1) for p, r in zip(prefixes, rows, strict=True)])
    pos = torch.cat([p.position_ids.expand(-1, r, -1)
                     for p, r in zip(prefixes, rows, strict=True)], dim=1)
    layers = []
    for layer in range(len(prefixes[0].kv)):
        keys = torch.cat([p.kv[layer][0].expand(r, -1, -1, -1)
                          for p, r in zip(prefixes, rows, strict=True)])
        values = torch.cat([p.kv[layer][1].expand(r, -1, -1, -1)
                            for p, r in zip(prefixes, rows, strict=True)])
        layers.append((keys, values))
    return ids, pos, DynamicCache(ddp_cache_data=layers, config=config)


class PrefixStore:
    """The prefixes of one engine: computed on demand, kept across calls while asked again."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.kept: dict[tuple, Prefix] = {}
        self.computed = 0  # prefixes computed (for tests and the bench)

    def start_call(self, requests: list[GenRequest]) -> None:
        """Free the kept prefixes this call does not ask for (pairs stopped, chunk done)."""
        asked = {prompt_key(r) for r in requests}
        self.kept = {k: p for k, p in self.kept.items() if k in asked}

    def get(self, req: GenRequest) -> Prefix:
        key = prompt_key(req)
        prefix = self.kept.get(key) if key is not None else None
        if prefix is None:
            prefix = compute_prefix(self.engine, req)
            self.computed += 1
            if key is not None and req.asked_again:
                self.kept[key] = prefix
        elif not req.asked_again:
            del self.kept[key]  # the caller's last ask: freed once its batch is decoded
        return prefix

    def clear(self) -> None:
        self.kept = {}
