"""EvoqGRPOConfig sizes and checks; the pair-aware sampler under accelerate's sharding."""

from __future__ import annotations

from collections import Counter

import pytest

pytest.importorskip("trl")

from accelerate.data_loader import BatchSamplerShard  # noqa: E402
from torch.utils.data import BatchSampler  # noqa: E402

from evoq_data.core.errors import EvoqError
from evoq_train.config import EvoqGRPOConfig  # noqa: E402
from evoq_train.sampler import PairRepeatSampler  # noqa: E402
from evoq_train.settings import available_recipes, load_recipe, parse_overrides  # noqa: E402


def _config(tmp_path, **kw):
    kw.setdefault("use_cpu", True)
    kw.setdefault("bf16", False)
    return EvoqGRPOConfig(output_dir=str(tmp_path), report_to="none", **kw)


def test_card_defaults_and_batch_mapping(tmp_path):
    c = _config(tmp_path)
    assert (c.num_generations, c.learning_rate, c.lr_scheduler_type, c.beta, c.loss_type) == (
        32, 3e-7, "linear", 0.05, "grpo")
    # 4 images x 32 answers = 128 completions per device = 8 per pass x 16 passes.
    assert c.samples_per_device == 4 and c.per_device_train_batch_size == 8
    assert c.steps_per_generation == 16 and c.gradient_accumulation_steps == 16
    assert c.generation_batch_size == 128 * c.world_size


@pytest.mark.parametrize("kw, message", [
    (dict(num_generations=1), "at least 2 answers"),
    (dict(samples_per_device=3), "whole pairs"),
    (dict(num_generations=4, samples_per_device=2, per_device_train_batch_size=3), "not a multiple"),
    (dict(num_generations=4, samples_per_device=None, per_device_train_batch_size=4,
          steps_per_generation=1), "cannot hold whole pairs"),
    (dict(num_generations=4, samples_per_device=2, per_device_train_batch_size=4,
          gradient_accumulation_steps=3), "gradient_accumulation_steps 3"),
])
def test_invalid_sizes_fail_with_cause_and_fix(tmp_path, kw, message):
    with pytest.raises(EvoqError, match=message):
        _config(tmp_path, **kw)


def _slices(make_sampler, local, num_processes):
    """What each process gets from one pass, as accelerate shards TRL's generation batches
    (every process builds its own sampler with the same seed)."""
    out = []
    for r in range(num_processes):
        batches = BatchSampler(make_sampler(), batch_size=local, drop_last=False)
        out.append([list(b) for b in BatchSamplerShard(batches, num_processes=num_processes,
                                                          process_index=r, split_batches=False)])
    return out


@pytest.mark.parametrize("num_processes", [1, 2, 3, 4])
@pytest.mark.parametrize("pairs_per_device", [1, 2])
def test_every_process_slice_holds_whole_pairs(num_processes, pairs_per_device):
    g, num_pairs = 4, 13
    local = pairs_per_device * 2 * g

    def sampler():
        return PairRepeatSampler(range(2 * num_pairs), num_generations=g,
                                 pairs_per_batch=pairs_per_device * num_processes,
                                 repeat_count=2, seed=7)

    seen_pairs = set()
    for per_process in _slices(sampler, local, num_processes):
        for batch in per_process:
            counts = Counter(batch)
            pairs = {row // 2 for row in batch}
            assert len(batch) == local
            assert all(counts[2 * p] == g and counts[2 * p + 1] == g for p in pairs)
            seen_pairs |= pairs
    usable = (num_pairs // (pairs_per_device * num_processes)) * pairs_per_device * num_processes
    assert len(seen_pairs) == usable


def test_trl_repeat_sampler_would_split_pairs():
    """Why the sampler exists: TRL's stock sampler separates a pair's images."""
    from trl.trainer.utils import RepeatSampler

    g = 4
    def sampler():
        return RepeatSampler(range(26), mini_repeat_count=g, batch_size=4, seed=7)

    batches = _slices(sampler, 2 * g, 2)[0]
    # Some process slice holds an image without its partner.
    assert any((r ^ 1) not in set(batch) for batch in batches for r in batch)


def test_recipes_ship_and_parse():
    assert {"qwen2.5-vl-7b-8xa100", "qwen2.5-vl-7b-1gpu", "cpu-smoke"} <= set(available_recipes())
    card = load_recipe("qwen2.5-vl-7b-8xa100")
    assert (card["num_generations"], card["samples_per_device"], card["learning_rate"],
            card["beta"]) == (32, 4, 3e-7, 0.05)
    with pytest.raises(EvoqError, match="no recipe 'nope'"):
        load_recipe("nope")
    assert parse_overrides(["--max_steps", "3", "--bf16=false", "--use-vllm"]) == {
        "max_steps": 3, "bf16": False, "use_vllm": True}


def test_numbers_in_exponent_notation_are_numbers():
    # YAML reads 1e-6 (no dot) as a string: the grpo help's own example, --learning_rate 1e-6
    from evoq_train.config import split_settings

    script, cfg = split_settings(parse_overrides(
        ["--learning_rate", "1e-6", "--beta", "5e-2", "--thurstone_gamma", "1e-6",
         "--max_steps", "3"]))
    assert (cfg["learning_rate"], cfg["beta"], cfg["thurstone_gamma"], cfg["max_steps"]) == (
        1e-6, 0.05, 1e-6, 3)
    with pytest.raises(EvoqError, match="learning_rate expects a number, got 'abc'"):
        split_settings({"learning_rate": "abc"})


@pytest.mark.parametrize("recipe", ["qwen2.5-vl-7b-8xa100", "qwen2.5-vl-7b-1gpu"])
def test_gpu_recipes_build_valid_configs(tmp_path, recipe):
    from evoq_train.config import split_settings

    settings = load_recipe(recipe)
    settings.update(use_cpu=True, bf16=False, output_dir=str(tmp_path))
    script, cfg = split_settings(settings)
    c = EvoqGRPOConfig(**cfg)
    assert script.model == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert c.per_device_train_batch_size * c.steps_per_generation == 4 * 32
