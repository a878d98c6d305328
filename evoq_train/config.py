"""Training configuration: ``EvoqGRPOConfig`` (TRL's GRPOConfig with the card's defaults),
the script arguments beside it, and the YAML recipes shipped with the package.

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

import dataclasses
from dataclasses import dataclass, field

from evoq_data.core.errors import EvoqError, require

trl = require("trl", "train")


@dataclass
class EvoqScriptArguments:
    """What to train and from which data (everything that is not a TRL training argument)."""

    dataset: str | None = field(default=None, metadata={
        "help": "Preferences to train on: a Hub dataset id, a folder written by `evoq-data push "
                "--local-dir`, or an aggregate PREFS_DIR (preferences.parquet with image paths)."})
    dataset_revision: str | None = field(default=None, metadata={
        "help": "Dataset revision on the Hub: a version tag such as v1, a branch or a commit."})
    model: str | None = field(default=None, metadata={
        "help": "Policy to start from: Hub id or local checkpoint folder (Qwen2.5-VL family)."})
    model_revision: str | None = field(default=None, metadata={
        "help": "Model revision on the Hub (branch, tag or commit)."})
    max_pairs: int | None = field(default=None, metadata={
        "help": "Train on at most this many pairs (the first ones with a p*); for smoke tests."})
    min_pixels: int | None = field(default=None, metadata={
        "help": "Processor min_pixels (image resize floor); default: the checkpoint's."})
    max_pixels: int | None = field(default=None, metadata={
        "help": "Processor max_pixels (image resize cap); bounds the vision tokens per image."})
    torch_dtype: str = field(default="auto", metadata={
        "help": "Weights dtype when loading the policy: auto (bf16 when bf16 training is on, "
                "else float32), bfloat16 or float32."})


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
    pair_audit_path: str | None = field(default=None, metadata={
        "help": "Debugging: append one JSON line per reward call (rank, pairs seen, answers per "
                "image) to this file."})

    def __post_init__(self):
        g = self.num_generations
        if g is None or g < 2:
            raise EvoqError(f"num_generations is {g}: GRPO needs at least 2 answers per image "
                            "to compare them (card: 32); set --num_generations 2 or more")
        if self.format_weight < 0 or self.length_penalty_weight < 0:
            raise EvoqError("format_weight and length_penalty_weight must be >= 0")
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
            local = s * g
            if local % self.per_device_train_batch_size:
                raise EvoqError(
                    f"samples_per_device x num_generations = {local} completions is not a "
                    f"multiple of per_device_train_batch_size ({self.per_device_train_batch_size}); "
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
        if local % (2 * g):
            raise EvoqError(
                f"the per-device generation batch ({self.per_device_train_batch_size} x "
                f"{self.steps_per_generation} = {local} completions) cannot hold whole pairs, "
                f"which need 2 x num_generations = {2 * g} completions each; make it a multiple "
                f"of {2 * g} (e.g. samples_per_device 2 or 4)")


def _number_type(name: str) -> type | None:
    """float or int when the setting ``name`` is numeric (optional or not), else None."""
    import typing

    for cls in (EvoqGRPOConfig, EvoqScriptArguments):
        hint = typing.get_type_hints(cls).get(name)
        if hint is not None:
            kinds = set(typing.get_args(hint)) - {type(None)} or {hint}
            return next((t for t in (float, int) if kinds == {t}), None)
    return None


def _as_number(name: str, value):
    """A numeric setting given as text (YAML reads ``1e-6`` as a string) -> its number."""
    kind = _number_type(name) if isinstance(value, str) else None
    if kind is None:
        return value
    try:
        return kind(value)
    except ValueError:
        raise EvoqError(f"setting {name} expects {'a number' if kind is float else 'an integer'}"
                        f", got {value!r}") from None


def split_settings(settings: dict) -> tuple[EvoqScriptArguments, dict]:
    """Script arguments and the GRPO config keyword arguments; unknown keys fail."""
    script_names = {f.name for f in dataclasses.fields(EvoqScriptArguments)}
    config_names = {f.name for f in dataclasses.fields(EvoqGRPOConfig)}
    unknown = sorted(k for k in settings if k not in script_names | config_names | {"recipe"})
    if unknown:
        raise EvoqError(f"unknown setting(s): {', '.join(unknown)} (not an evoq script argument "
                        "nor a TRL GRPOConfig field)")
    settings = {k: _as_number(k, v) for k, v in settings.items()}
    script = EvoqScriptArguments(**{k: v for k, v in settings.items() if k in script_names})
    config = {k: v for k, v in settings.items() if k in config_names}
    return script, config
