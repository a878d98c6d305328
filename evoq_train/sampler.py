"""Pair-aware batching: both images of every pair, with all their answers, on one process.

The fidelity reward of an image's answers needs its partner's answers (their mean and
variance). TRL's ``RepeatSampler`` shuffles single prompts, so the two images of a pair land in
different generation batches, and a prompt's group can straddle two processes. Rewards are
computed on each process's slice only, so that would compare against the wrong partner.

How the pieces fit (TRL 1.16 with accelerate):

* the training dataset holds one row per image, the pair's first image at row ``2p`` and its
  second at ``2p + 1`` (:func:`evoq_train.data.to_image_prompts`);
* :class:`PairRepeatSampler` shuffles *pairs* and yields, per pair, row ``2p`` num_generations
  times then row ``2p + 1`` num_generations times;
* accelerate gives process ``r`` the ``r``-th consecutive block of ``per_device_train_batch_size
  * steps_per_generation`` indices of each global generation batch (``BatchSamplerShard``,
  ``split_batches=False``), under DDP and DeepSpeed alike;
* :class:`~evoq_train.config.EvoqGRPOConfig` requires that block to be a multiple of
  ``2 * num_generations``; so every block starts at a pair boundary and holds whole pairs,
  with any number of processes.

With compare rows (``--compare_weight``) a pair is four rows (``4p`` .. ``4p + 3``: its two
score prompts, then its compare prompt in both shown orders): ``rows_per_pair=4``, and the
block must be a multiple of ``4 * num_generations``. Every row is still yielded
num_generations times in a row, so each compare prompt is a GRPO group of its own.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized

from evoq_data.core.errors import EvoqError

_WORDS = {2: "two", 4: "four"}


class PairRepeatSampler:
    """TRL's ``RepeatSampler`` with pairs as the unit of shuffling and batching.

    Args:
        data_source: the per-image dataset (rows_per_pair rows per pair, consecutive).
        num_generations: completions per image (TRL's ``mini_repeat_count``).
        pairs_per_batch: pairs in one global generation batch
            (``generation_batch_size // (2 * num_generations)``).
        repeat_count: how often each generation batch is yielded (TRL reuses generations
            for ``num_iterations * steps_per_generation`` steps).
        shuffle, seed: shuffle pairs with a local generator seeded identically on every process.
        rows_per_pair: 2 (the two score prompts) or 4 (with the two compare prompts).
    """

    def __init__(self, data_source: Sized, num_generations: int, pairs_per_batch: int = 1,
                 repeat_count: int = 1, shuffle: bool = True, seed: int | None = None,
                 rows_per_pair: int = 2) -> None:
        if rows_per_pair < 2:
            raise EvoqError(f"rows_per_pair is {rows_per_pair}; a pair has at least two rows")
        if len(data_source) % rows_per_pair:
            raise EvoqError(f"the per-image training set has {len(data_source)} rows; pair-aware "
                            f"batching needs {_WORDS.get(rows_per_pair, rows_per_pair)} rows per "
                            "pair")
        if pairs_per_batch < 1:
            raise EvoqError("a generation batch must hold at least one pair")
        self.rows_per_pair = rows_per_pair
        self.num_pairs = len(data_source) // rows_per_pair
        self.num_generations = num_generations
        self.pairs_per_batch = pairs_per_batch
        self.repeat_count = repeat_count
        self.shuffle = shuffle
        self.seed = seed
        self.generator = None
        if shuffle:
            import torch

            self.generator = torch.Generator()
            if seed is not None:
                self.generator.manual_seed(seed)

    def pair_order(self) -> list[int]:
        if self.shuffle:
            import torch

            return torch.randperm(self.num_pairs, generator=self.generator).tolist()
        return list(range(self.num_pairs))

    def __iter__(self) -> Iterator[int]:
        order = self.pair_order()
        chunks = [order[i:i + self.pairs_per_batch]
                  for i in range(0, len(order), self.pairs_per_batch)]
        for chunk in chunks:
            if len(chunk) < self.pairs_per_batch:
                break  # as RepeatSampler: a partial last batch is dropped
            for _ in range(self.repeat_count):
                for pair in chunk:
                    for row in range(self.rows_per_pair * pair, self.rows_per_pair * (pair + 1)):
                        yield from [row] * self.num_generations

    def __len__(self) -> int:
        full = self.num_pairs // self.pairs_per_batch
        return (full * self.pairs_per_batch * self.rows_per_pair * self.num_generations
                * self.repeat_count)
