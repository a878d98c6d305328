"""``evoq-train grpo``'s parser (TRL's TrlParser over evoq's dataclasses, recipes, overrides,
one-line errors); EvoqGRPOConfig sizes and checks; the pair-aware sampler under accelerate's
sharding; the recipes keep a KL term."""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter

import pytest
import yaml
from fixtures.cli import assert_user_error
from typer.testing import CliRunner

pytest.importorskip("trl")

from accelerate.data_loader import BatchSamplerShard  # noqa: E402
from torch.utils.data import BatchSampler  # noqa: E402

from evoq_data.core.errors import EvoqError  # noqa: E402
from evoq_train.cli import app  # noqa: E402
from evoq_train.config import (  # noqa: E402
    BETA_ZERO_WARNING,
    EvoqGRPOConfig,
    parse_grpo_args,
    training_warnings,
)
from evoq_train.recipes import available_recipes, recipes_dir, resolve_recipe  # noqa: E402
from evoq_train.sampler import PairRepeatSampler  # noqa: E402

runner = CliRunner()


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


def test_help_lists_every_grpo_config_field():
    import trl

    result = runner.invoke(app, ["grpo", "--help"])
    assert result.exit_code == 0, result.output
    text = result.stdout
    for option in ("--num_generations", "--beta", "--learning_rate", "--max_steps",
                   "--samples_per_device", "--thurstone_gamma", "--dataset", "--revision",
                   "--model", "--model_name_or_path", "--output-dir", "--use-vllm", "--no-vllm",
                   "--resume-from-checkpoint", "--quiet", "--dtype", "--attn_implementation"):
        assert f"{option} " in text or f"{option}," in text, option
    missing = [f.name for f in dataclasses.fields(trl.GRPOConfig)
               if f.init and f"--{f.name} " not in text and f"--{f.name}," not in text]
    assert missing == []
    assert "cpu-smoke" in text  # the shipped recipe names


def test_recipe_names_and_files_resolve(tmp_path):
    assert {"qwen2.5-vl-7b-8xa100", "qwen2.5-vl-7b-1gpu", "cpu-smoke"} <= set(available_recipes())
    assert resolve_recipe("cpu-smoke") == recipes_dir() / "cpu-smoke.yaml"
    assert resolve_recipe("cpu-smoke.yaml") == recipes_dir() / "cpu-smoke.yaml"
    own = tmp_path / "mine.yaml"
    own.write_text("num_generations: 6\nsamples_per_device: 2\nper_device_train_batch_size: 6\n"
                   "use_cpu: true\nbf16: false\n")
    assert resolve_recipe(str(own)) == own
    with pytest.raises(EvoqError, match="no recipe 'nope'.*cpu-smoke"):
        resolve_recipe("nope")

    card = parse_grpo_args(["--config", "qwen2.5-vl-7b-8xa100", "--output_dir", str(tmp_path),
                            "--use_cpu", "--bf16", "false"])
    assert card.recipe == "qwen2.5-vl-7b-8xa100"
    t = card.training
    assert (t.num_generations, t.samples_per_device, t.learning_rate, t.beta, t.use_vllm) == (
        32, 4, 3e-7, 0.05, True)
    assert card.model.model_name_or_path == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert card.script.max_pixels == 1003520

    # A YAML path; only its file name goes to the lineage (no machine path on a card).
    mine = parse_grpo_args([f"--config={own}", "--output-dir", str(tmp_path)])
    assert mine.recipe == "mine.yaml"
    assert (mine.training.num_generations, mine.training.steps_per_generation) == (6, 2)


def test_command_line_beats_recipe_beats_defaults(tmp_path):
    smoke = yaml.safe_load(resolve_recipe("cpu-smoke").read_text())
    assert (smoke["max_steps"], smoke["learning_rate"]) == (2, 1e-3)
    a = parse_grpo_args(["--config", "cpu-smoke", "--output-dir", str(tmp_path),
                         "--max_steps", "7", "--learning_rate", "1e-6", "--model", "m",
                         "--revision", "v3", "--dataset", "d", "--quiet"])
    assert (a.training.max_steps, a.training.learning_rate) == (7, 1e-6)  # overridden
    assert type(a.training.learning_rate) is float
    assert a.training.num_generations == 4 and a.training.length_penalty_chars == 64  # recipe
    assert a.training.epsilon == 0.2 and a.training.loss_type == "grpo"  # defaults
    assert (a.model.model_name_or_path, a.script.dataset_revision, a.script.dataset,
            a.script.quiet, a.model.dtype) == ("m", "v3", "d", True, "float32")
    # Underscores as well as dashes; the last of two spellings wins.
    b = parse_grpo_args(["--config", "cpu-smoke", "--output_dir", str(tmp_path),
                         "--model_name_or_path", "m2", "--dataset_revision", "v1",
                         "--use_vllm", "--no-vllm", "--resume_from_checkpoint", "true"])
    assert (b.model.model_name_or_path, b.script.dataset_revision, b.training.use_vllm,
            b.training.resume_from_checkpoint) == ("m2", "v1", False, "true")
    assert parse_grpo_args(["--config", "cpu-smoke", "--output-dir", str(tmp_path),
                            "--use-vllm"]).training.use_vllm is True
    # null for an optional number: size the generation batch by hand.
    c = parse_grpo_args(["--config", "cpu-smoke", "--output-dir", str(tmp_path),
                         "--samples_per_device", "null", "--steps_per_generation", "4"])
    assert (c.training.samples_per_device, c.training.steps_per_generation) == (None, 4)


def test_recipe_values_take_the_field_types(tmp_path):
    """YAML reads 1e-6 (no dot) as a string; TRL's parser converts it with the field's type,
    and a value of the wrong type is refused, not passed on."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: m\nrevision: v2\nlearning_rate: 1e-6\nbeta: 5e-2\n"
                      "thurstone_gamma: 1e-6\nmax_steps: 3\noutput-dir: out\nuse_cpu: true\n"
                      "bf16: false\nreasoning: false\n")
    a = parse_grpo_args(["--config", str(recipe)])
    assert (a.training.learning_rate, a.training.beta, a.training.thurstone_gamma,
            a.training.max_steps, a.training.output_dir, a.training.reasoning) == (
        1e-6, 0.05, 1e-6, 3, "out", False)
    assert all(type(v) is float for v in (a.training.learning_rate, a.training.beta))
    assert (a.model.model_name_or_path, a.script.dataset_revision) == ("m", "v2")
    recipe.write_text("max_steps: 2.5\noutput_dir: out\n")
    with pytest.raises(EvoqError, match="--max_steps.*invalid int value: '2.5'"):
        parse_grpo_args(["--config", str(recipe)])
    recipe.write_text("max_stepz: 3\noutput_dir: out\n")
    with pytest.raises(EvoqError, match=r"unknown setting\(s\) in recipe r.yaml: max_stepz"):
        parse_grpo_args(["--config", str(recipe)])


def _grpo(*args):
    return runner.invoke(app, ["grpo", *args])


@pytest.mark.parametrize("args, fragments", [
    (["--learning_rate", "abc"], ["--learning_rate", "invalid float value: 'abc'"]),
    (["--learning-rate=abc"], ["invalid float value: 'abc'"]),
    (["--max_steps"], ["--max_steps", "expected one argument"]),
    (["--learning_rat", "1"], ["unknown option(s): --learning_rat 1"]),  # no abbreviations
    (["--num_generatoins", "8"], ["unknown option(s): --num_generatoins"]),
    (["stray"], ["unknown option(s): stray"]),
    (["--dtype", "int8"], ["invalid choice: 'int8'"]),
    (["--bf16", "maybe"], ["--bf16", "Truthy value expected"]),
    (["--config", "cpu-smoke"], ["--config given twice"]),
    (["--lr_scheduler_type", "sideways"], ["invalid training settings", "sideways"]),
    (["--use_peft", "--model", "m", "--dataset", "d"], ["use_peft", "not supported"]),
])
def test_bad_options_are_one_line(tmp_path, args, fragments):
    assert_user_error(_grpo("--config", "cpu-smoke", "--output-dir", str(tmp_path), *args),
                      *fragments)


def test_missing_output_dir_and_bad_recipe(tmp_path):
    assert_user_error(_grpo("--config", "cpu-smoke"), "no output folder: give --output-dir")
    assert_user_error(_grpo("--config", "no-such", "--output-dir", str(tmp_path)),
                      "no recipe 'no-such'", "cpu-smoke")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    assert_user_error(_grpo("--config", str(bad), "--output-dir", str(tmp_path)),
                      "must be a mapping of settings")
    bad.write_text("key: [unclosed\n")
    assert_user_error(_grpo("--config", str(bad), "--output-dir", str(tmp_path)),
                      "is not valid YAML")


def test_other_commands_still_work():
    r = runner.invoke(app, ["recipe-path", "accelerate/zero3"])
    assert r.exit_code == 0 and r.stdout.strip() == str(recipes_dir() / "accelerate" / "zero3.yaml")
    assert_user_error(runner.invoke(app, ["recipe-path", "nope"]), "no recipe 'nope'")
    from evoq_data import __version__

    r = runner.invoke(app, ["version"])
    assert r.exit_code == 0 and r.stdout.strip() == __version__


@pytest.mark.parametrize("recipe", available_recipes())
def test_every_shipped_recipe_keeps_a_kl_term(tmp_path, recipe):
    """beta = 0 with the fidelity reward invites collapse to one constant score; the GPU
    recipes use the paper's 0.05."""
    a = parse_grpo_args(["--config", recipe, "--output-dir", str(tmp_path), "--use_cpu",
                         "--bf16", "false"])
    assert a.training.beta > 0 and training_warnings(a.training) == []
    if recipe.startswith("qwen"):
        assert a.training.beta == 0.05


def test_beta_zero_is_warned(tmp_path, caplog):
    c = _config(tmp_path, beta=0.0, num_generations=4, samples_per_device=2,
                per_device_train_batch_size=4)
    assert training_warnings(c) == [BETA_ZERO_WARNING]
    assert "sqrt(0.5)=0.707" in BETA_ZERO_WARNING and "beta=0.05" in BETA_ZERO_WARNING
    # Through the command line: logged as a WARNING before anything is loaded.
    with caplog.at_level(logging.WARNING, logger="evoq_train"):
        result = _grpo("--config", "cpu-smoke", "--beta", "0", "--output-dir", str(tmp_path),
                       "--model", str(tmp_path / "no-model"), "--dataset", str(tmp_path))
    assert result.exit_code == 1
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        BETA_ZERO_WARNING]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="evoq_train"):
        _grpo("--config", "cpu-smoke", "--output-dir", str(tmp_path),
              "--model", str(tmp_path / "no-model"), "--dataset", str(tmp_path))
    assert not [r for r in caplog.records if r.getMessage() == BETA_ZERO_WARNING]


@pytest.mark.parametrize("recipe", ["qwen2.5-vl-7b-8xa100", "qwen2.5-vl-7b-1gpu"])
def test_gpu_recipes_build_valid_configs(tmp_path, recipe):
    a = parse_grpo_args(["--config", recipe, "--output-dir", str(tmp_path), "--use_cpu",
                         "--bf16", "false"])
    c = a.training
    assert a.model.model_name_or_path == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert c.per_device_train_batch_size * c.steps_per_generation == 4 * 32
