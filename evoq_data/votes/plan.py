"""What a vote run will ask, decided before any engine starts: the settings (checked), the
shown order and seed of every vote, which worker votes which pair, and the chunks.

Every function here is pure (no file, no engine), so the local and the Ray runner plan
alike and a vote is a pure function of (seed, pair_id, vote_index, model, prompt, sampling):
the shown order of each vote and the seed of each request derive from (seed, pair_id) alone,
never from the chunking or from what ran before.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from evoq_data.core.errors import EvoqError
from evoq_data.core.ids import digest_u64, request_seed
from evoq_data.generation.engines import Sampling, engine_class
from evoq_data.generation.prompts import Prompt
from evoq_data.generation.spec import GenerationSpec
from evoq_data.votes.stop import MODES, STOPS
from evoq_data.votes.store import MAX_SHARDS

ORDERS = ("random", "balanced")
MAX_VOTES_PER_PAIR = 4096  # 128 x the paper's K: a pair's plan and answers fit in memory


@dataclass(frozen=True)
class VoteSettings:
    """How the votes of every pair of a run are asked for (everything but the engine).

    ``stop``: ``fixed`` (all K, the paper), ``decided`` or ``confident`` (see
    :mod:`evoq_data.votes.stop`), asked ``wave`` votes at a time; ``mode``: ``sample`` (K
    sampled answers) or ``logprob`` (one forward pass per shown order, 2 rows per pair).
    Checked on construction, so every runner refuses the same bad combinations."""

    prompt: Prompt
    sampling: Sampling
    votes_per_pair: int = 32
    seed: int = 0
    order: str = "random"
    stop: str = "fixed"
    wave: int = 8
    confidence: float | None = None
    mode: str = "sample"

    def __post_init__(self) -> None:
        k = self.votes_per_pair
        if self.mode not in MODES:
            raise EvoqError(f"unknown --mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.stop not in STOPS:
            raise EvoqError(f"unknown --stop {self.stop!r}; choose one of {', '.join(STOPS)}")
        if self.order not in ORDERS:
            raise EvoqError(f"unknown --order {self.order!r}; choose one of {', '.join(ORDERS)}")
        if k < 1:
            raise EvoqError(f"--votes-per-pair must be at least 1, got {k}")
        if k > MAX_VOTES_PER_PAIR:
            raise EvoqError(f"--votes-per-pair must be at most {MAX_VOTES_PER_PAIR} (the "
                            f"paper's K is 32), got {k}")
        if self.mode == "logprob":
            if self.prompt.reasoning:
                raise EvoqError("--mode logprob reads the first answer token; it needs "
                                "--no-reasoning")
            if self.stop != "fixed":
                raise EvoqError(f"--stop {self.stop} is for --mode sample; --mode logprob "
                                "asks one forward pass per pair and shown order")
            if k != 2:
                raise EvoqError(f"--mode logprob writes 2 rows per pair (one per shown "
                                f"order); drop --votes-per-pair (got {k})")
            if self.sampling.temperature != 1 or self.sampling.top_p != 1:
                raise EvoqError("--mode logprob reads the model's own distribution; it takes "
                                "--temperature 1 and --top-p 1 (got "
                                f"{self.sampling.temperature}, {self.sampling.top_p})")
        if self.order == "balanced" and k % 2:
            raise EvoqError(f"--order balanced needs an even --votes-per-pair, got {k}")
        if self.stop == "confident":
            if self.confidence is None:
                raise EvoqError("--stop confident needs --confidence C (e.g. 0.99)")
            if not 0.5 < self.confidence < 1:
                raise EvoqError(f"--confidence must be in (0.5, 1), got {self.confidence}")
        elif self.confidence is not None:
            raise EvoqError(f"--confidence is for --stop confident, not --stop {self.stop}")
        if self.stop != "fixed":
            if self.order != "balanced":
                raise EvoqError(f"--stop {self.stop} needs --order balanced (every wave "
                                "shows each order equally often)")
            if self.wave < 2 or self.wave % 2:
                raise EvoqError(f"--wave must be an even number >= 2 with --stop {self.stop}, "
                                f"got {self.wave}")

    def identity(self) -> dict:
        """The manifest fields of these settings (wave and confidence only where they act,
        so a fixed run resumed with another --wave is not refused for nothing)."""
        return {"mode": self.mode, "stop": self.stop,
                "wave": self.wave if self.stop != "fixed" else None,
                "confidence": self.confidence}


def vote_settings(spec: GenerationSpec, *, votes_per_pair: int | None, seed: int, order: str,
                  stop: str, wave: int, confidence: float | None,
                  mode: str) -> tuple[VoteSettings, GenerationSpec]:
    """The checked settings of a run, and its spec as the engines must get it (``--mode
    logprob`` on vllm starts the engine with ``logprobs_mode=processed_logprobs``).

    ``votes_per_pair`` None: 32 (the paper's K), or 2 rows per pair in logprob mode."""
    if votes_per_pair is None:
        votes_per_pair = 2 if mode == "logprob" else 32
    settings = VoteSettings(prompt=spec.compare_prompt, sampling=spec.sampling,
                            votes_per_pair=votes_per_pair, seed=seed, order=order, stop=stop,
                            wave=wave, confidence=confidence, mode=mode)
    if mode == "logprob" and not hasattr(engine_class(spec.engine), "answer_probs"):
        raise EvoqError(f"--mode logprob needs the transformers or vllm engine; engine "
                        f"{spec.engine!r} gives no token probabilities")
    if mode == "logprob" and spec.engine == "vllm":
        # vLLM returns the logprobs of the two allowed tokens renormalised only in this mode
        given = spec.engine_args.get("logprobs_mode", "processed_logprobs")
        if given != "processed_logprobs":
            raise EvoqError(f"--mode logprob on vllm needs logprobs_mode=processed_logprobs, "
                            f"got --engine-arg logprobs_mode={given}")
        spec = dataclasses.replace(spec, engine_args={**spec.engine_args,
                                                      "logprobs_mode": "processed_logprobs"})
    return settings, spec


def check_sharding(num_shards: int, shard_index: int, chunk_pairs: int) -> None:
    """Refuse a shard index outside [0, num_shards), more shards than shard file names
    hold, and an empty chunk."""
    if num_shards > MAX_SHARDS:
        raise EvoqError(f"--num-shards must be at most {MAX_SHARDS}, got {num_shards}")
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise EvoqError(f"--shard-index must be in [0, {num_shards}), got {shard_index}")
    if chunk_pairs < 1:
        raise EvoqError(f"--chunk-pairs must be at least 1, got {chunk_pairs}")


@dataclass(frozen=True)
class VotePlan:
    """Shown order and seeds of one pair's K votes."""

    pair_id: str
    swapped: np.ndarray  # bool[K], per vote_index
    seed_unswapped: int
    seed_swapped: int

    def seed_of(self, vote_index: int) -> int:
        """The seed of vote ``vote_index``: its order's request seed + its rank in that
        order (sample j of a shown order is drawn with seed base + j)."""
        swapped = self.swapped[vote_index]
        rank = int((self.swapped[:vote_index] == swapped).sum())
        return (self.seed_swapped if swapped else self.seed_unswapped) + rank


def shard_of(pair_id: str, num_shards: int) -> int:
    """Which of ``num_shards`` workers votes on this pair (deterministic, balanced)."""
    return digest_u64("shard", pair_id) % num_shards


def plan_votes(pair_id: str, k: int, seed: int, order: str) -> VotePlan:
    """Shown orders and request seeds for one pair: a pure function of its arguments.

    ``balanced``: each consecutive pair of votes (0-1, 2-3, ...) is shown once each way, a
    fair coin choosing which comes first, so K/2 votes go each way and so does every wave of
    an even size."""
    rng = np.random.default_rng(digest_u64("order", seed, pair_id))
    if order == "random":
        swapped = rng.random(k) < 0.5
    elif order == "balanced":
        if k % 2:
            raise EvoqError(f"--order balanced needs an even --votes-per-pair, got {k}")
        first = rng.random(k // 2) < 0.5
        swapped = np.empty(k, dtype=bool)
        swapped[0::2], swapped[1::2] = first, ~first
    else:
        raise EvoqError(f"unknown --order {order!r}; choose one of {', '.join(ORDERS)}")
    return VotePlan(pair_id, swapped, request_seed("seed", seed, pair_id, 0, n=k),
                    request_seed("seed", seed, pair_id, 1, n=k))


def chunks_of(pairs: list[dict], chunk_pairs: int) -> list[list[dict]]:
    """``pairs`` in order, ``chunk_pairs`` at a time: one engine batch and one shard file
    each."""
    return [pairs[start : start + chunk_pairs] for start in range(0, len(pairs), chunk_pairs)]
