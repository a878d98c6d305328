"""The GRPO stage: TRL's GRPOTrainer with pair-aware batching, and ``run_grpo`` around it.

Only what TRL does not do lives here: the sampler that keeps pairs together, a resume that
loads the checkpoint's weights and takes no step past ``max_steps``, the rewards, and the model
card with lineage written beside the checkpoint.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

from evoq_data import __version__
from evoq_data.core.errors import EvoqError, require

log = logging.getLogger(__name__)

LINEAGE_FILE = "evoq_train.json"


def _trainer_class():
    trl = require("trl", "train")

    from .sampler import PairRepeatSampler

    class EvoqGRPOTrainer(trl.GRPOTrainer):
        """GRPOTrainer whose sampler keeps both images of each pair in one process's slice, and
        whose resume loads the checkpoint's weights and stops at max_steps."""

        def _get_train_sampler(self, dataset=None):
            dataset = self.train_dataset if dataset is None else dataset
            rows = self.args.prompts_per_pair
            return PairRepeatSampler(
                dataset,
                num_generations=self.num_generations,
                pairs_per_batch=self.args.generation_batch_size // (rows * self.num_generations),
                repeat_count=self.num_iterations * self.args.steps_per_generation,
                shuffle=self.shuffle_dataset,
                seed=self.args.seed,
                rows_per_pair=rows,
            )

        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            # Called with model=None for one plain process and DDP (before accelerate wraps
            # the model); DeepSpeed reloads its own module states, FSDP its own shards.
            if model is not None or self.is_deepspeed_enabled or self.is_fsdp_enabled:
                return super()._load_from_checkpoint(resume_from_checkpoint, model)
            load_checkpoint_weights(self.model, resume_from_checkpoint)

        def _run_epoch(self, *args, **kwargs):
            # Resumed at max_steps (the last checkpoint of a finished run, its epoch not over):
            # transformers would take one more step before it checks; take none.
            if 0 < self.state.max_steps <= self.state.global_step:
                self.control.should_training_stop = True
                return
            return super()._run_epoch(*args, **kwargs)

    return EvoqGRPOTrainer


def load_checkpoint_weights(model, folder: str | Path) -> None:
    """Copy a checkpoint's weights into ``model``, names mapped as ``from_pretrained`` maps them.

    ``save_pretrained`` writes Qwen2.5-VL under its original names (``model.layers.*``,
    ``visual.*``, the model's conversion mapping reversed); transformers' Trainer resumes with a
    plain ``load_state_dict`` that maps nothing, so no key would match and training would go on
    from the parent's weights. ``from_pretrained`` applies the mapping; a key that still does
    not fit is refused. Holds a second copy of the weights in CPU memory while it copies.
    """
    fresh, info = type(model).from_pretrained(str(folder), dtype=model.dtype,
                                              output_loading_info=True)
    misfits = {kind: sorted(str(k) for k in info.get(kind) or ())
               for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    misfits = {kind: keys for kind, keys in misfits.items() if keys}
    if misfits:
        said = "; ".join(f"{kind.replace('_', ' ')}: {', '.join(keys[:3])}"
                         + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")
                         for kind, keys in misfits.items())
        raise EvoqError(f"--resume-from-checkpoint {folder}: its weights do not fit the model "
                        f"({said})")
    model.load_state_dict(fresh.state_dict(), strict=True)
    log.info("resumed the weights of %s", folder)


def training_processor(model: str, **kwargs):
    """The checkpoint's processor (``load_processor``), padding on the left.

    TRL pads the prompt ids on the left and takes the processor's image-token mask
    (``mm_token_type_ids``) as padded alike, which is the side TRL loads a processor with when
    it loads one itself. Padded on the right, a batch whose prompts differ in length (images of
    different sizes, compare prompts beside score prompts) gets its image tokens misplaced in
    the rope positions of the training forward pass (a wrong loss, or a shape error).
    """
    from evoq_data.generation.modeling import load_processor

    processor = load_processor(model, **kwargs)
    processor.tokenizer.padding_side = "left"
    return processor


def build_rewards(config, compare_reasoning: bool = True) -> tuple[list, list[float]]:
    """The reward functions and their weights, from the config's reward settings;
    ``compare_reasoning``: the compare rows' suffix setting (with compare_weight > 0)."""
    from .rewards import agreement_reward, fidelity_reward, format_reward, length_penalty

    funcs = [fidelity_reward(gamma=config.thurstone_gamma, eps=config.fidelity_eps,
                             reasoning=config.reasoning, audit_path=config.pair_audit_path)]
    weights = [1.0]
    if config.compare_weight > 0:
        funcs.append(agreement_reward(reasoning=compare_reasoning))
        weights.append(config.compare_weight)
    if config.format_weight > 0:
        funcs.append(format_reward(compare_reasoning=compare_reasoning))
        weights.append(config.format_weight)
    if config.length_penalty_weight > 0:
        funcs.append(length_penalty(config.length_penalty_chars))
        weights.append(config.length_penalty_weight)
    return funcs, weights


def _dataset_lineage(source: str, revision: str | None) -> dict:
    """Dataset id, revision and, when the dataset carries ``evoq.json``, its content hash."""
    lineage = {"dataset": source, "dataset_revision": revision}
    meta_path = Path(source) / "evoq.json"
    if not meta_path.is_file() and not Path(source).exists():
        try:
            from huggingface_hub import hf_hub_download

            meta_path = Path(hf_hub_download(source, "evoq.json", repo_type="dataset",
                                             revision=revision))
        except Exception as exc:  # noqa: BLE001 - lineage is best effort; say what is missing
            log.warning("no evoq.json in dataset %s (%s); lineage without its hash", source, exc)
    if meta_path.is_file():
        from evoq_data.core.io import read_json

        try:  # read after training: a damaged file costs the hash, not the trained model
            meta = read_json(meta_path, "dataset metadata")
        except EvoqError as exc:
            log.warning("%s; lineage without the dataset hash", exc)
        else:
            lineage["dataset_repo_id"] = meta.get("repo_id")
            lineage["dataset_version"] = meta.get("version")
            lineage["dataset_content_hash"] = meta.get("content_hash")
    return lineage


def write_model_card(out: Path, lineage: dict) -> Path:
    """Render cards/model_card.md.j2 into ``out/README.md``; lineage also as JSON."""
    from evoq_data.core.cards import render_model_card
    from evoq_data.core.io import write_json_atomic, write_text_atomic

    write_text_atomic(render_model_card(lineage), out / "README.md")
    write_json_atomic(lineage, out / LINEAGE_FILE)
    return out / "README.md"


def _compare_setting(config, script) -> dict | None:
    """With compare_weight > 0: the compare rows' weight and suffix setting, and where the
    setting comes from: the votes' own (the prompt the next round votes with), as the dataset
    records it, else the score prompt's ``reasoning``. None when the option is off."""
    if not config.compare_weight > 0:
        return None
    from .data import vote_reasoning

    recorded = vote_reasoning(script.dataset, script.dataset_revision)
    if recorded is None:
        log.warning("compare rows: the dataset does not record how its votes were asked for; "
                    "the compare prompt takes the score prompt's setting (reasoning %s)",
                    config.reasoning)
    return {"weight": config.compare_weight,
            "reasoning": config.reasoning if recorded is None else recorded,
            "reasoning_from": "reasoning setting" if recorded is None else "votes"}


def _resumed_step(checkpoint: str | None) -> int:
    """The global step a checkpoint was saved at (0 when not resuming)."""
    if not checkpoint:
        return 0
    from transformers import TrainerState

    state = Path(checkpoint) / "trainer_state.json"
    if not state.is_file():
        raise EvoqError(f"--resume-from-checkpoint: {checkpoint} has no trainer_state.json "
                        "(an incomplete checkpoint)")
    return TrainerState.load_from_json(str(state)).global_step


def run_grpo(args, *, quiet: bool = False, callbacks: list | None = None,
             wrap_reward=None) -> dict:
    """Train with GRPO; return a summary.

    ``args``: the :class:`~evoq_train.config.GrpoArgs` of ``parse_grpo_args``, or a dict of
    settings as in a recipe (``grpo_args_from_settings``). ``callbacks`` (transformers
    TrainerCallbacks) and ``wrap_reward`` (a function applied to each reward function, e.g. a
    timer) are for benchmarks and tests.
    """
    from .config import GrpoArgs, grpo_args_from_settings, training_warnings
    from .data import load_preferences, to_image_prompts

    if not isinstance(args, GrpoArgs):
        args = grpo_args_from_settings(args)
    script, config, model_args = args.script, args.training, args.model
    warnings = training_warnings(config)
    for warning in warnings:
        log.warning(warning)
    model = model_args.model_name_or_path
    if not script.dataset:
        raise EvoqError("no dataset: give --dataset (Hub id, pushed folder or PREFS_DIR)")
    if not model:
        raise EvoqError("no model: give --model (Hub id or checkpoint folder)")
    if model_args.use_peft or model_args.load_in_4bit or model_args.load_in_8bit:
        raise EvoqError("evoq-train grpo trains all weights, as the paper does; use_peft, "
                        "load_in_4bit and load_in_8bit are not supported")
    if quiet or script.quiet:
        config.disable_tqdm = True
    resume = config.resume_from_checkpoint
    if resume in (True, "true", "True"):
        from transformers.trainer_utils import get_last_checkpoint

        found = get_last_checkpoint(config.output_dir) if Path(config.output_dir).is_dir() else None
        if found is None:
            raise EvoqError(f"--resume-from-checkpoint true: no checkpoint-N folder in "
                            f"{config.output_dir}")
        config.resume_from_checkpoint = found
    elif resume and not Path(resume).is_dir():
        raise EvoqError(f"--resume-from-checkpoint: {resume} is not a checkpoint folder")
    resumed_step = _resumed_step(config.resume_from_checkpoint)

    from evoq_data.generation.modeling import check_vlm_checkpoint

    check_vlm_checkpoint(model)
    pairs = load_preferences(script.dataset, script.dataset_revision)
    compare = _compare_setting(config, script)
    train_ds, data_summary = to_image_prompts(
        pairs, reasoning=config.reasoning, max_pairs=script.max_pairs,
        compare=compare is not None,
        compare_reasoning=compare["reasoning"] if compare else True)
    pairs_per_batch = config.generation_batch_size // (config.prompts_per_pair
                                                       * config.num_generations)
    if data_summary["pairs_used"] < pairs_per_batch:
        raise EvoqError(
            f"{data_summary['pairs_used']} pair(s) to train on, but one generation batch takes "
            f"{pairs_per_batch} (samples_per_device x processes / 2); use fewer processes or a "
            "smaller samples_per_device")

    processor = training_processor(model, revision=model_args.model_revision,
                                   min_pixels=script.min_pixels, max_pixels=script.max_pixels)
    funcs, weights = build_rewards(config, compare["reasoning"] if compare else True)
    if wrap_reward is not None:
        funcs = [wrap_reward(f) for f in funcs]
    config.reward_weights = weights
    init = dict(config.model_init_kwargs or {})
    init.setdefault("dtype", model_args.dtype or ("bfloat16" if config.bf16 else "float32"))
    if model_args.model_revision:
        init.setdefault("revision", model_args.model_revision)
    if model_args.attn_implementation:
        init.setdefault("attn_implementation", model_args.attn_implementation)
    config.model_init_kwargs = init

    trainer = _trainer_class()(model=model, reward_funcs=funcs, args=config,
                               train_dataset=train_ds, processing_class=processor,
                               callbacks=callbacks)
    result = trainer.train(resume_from_checkpoint=config.resume_from_checkpoint)
    out = Path(config.output_dir)
    # transformers reports 0.0 for a call that took no step (resumed at max_steps): no loss.
    train_loss = result.training_loss if trainer.state.global_step > resumed_step else None
    trainer.save_model(str(out))
    lineage = {
        "base_model": model, "base_model_revision": model_args.model_revision,
        **_dataset_lineage(script.dataset, script.dataset_revision),
        "recipe": args.recipe, "evoq_version": __version__,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "data": data_summary, "global_steps": trainer.state.global_step,
        "world_size": config.world_size,
        "distributed_type": str(trainer.accelerator.distributed_type).rsplit(".", 1)[-1],
        "zero_stage": getattr(trainer.accelerator.state.deepspeed_plugin, "zero_stage", None),
        "hyperparameters": {k: getattr(config, k) for k in (
            "num_generations", "samples_per_device", "per_device_train_batch_size",
            "steps_per_generation", "gradient_accumulation_steps", "learning_rate",
            "lr_scheduler_type", "beta", "epsilon", "loss_type", "optim", "bf16",
            "max_completion_length", "temperature", "reasoning", "format_weight",
            "length_penalty_weight", "compare_weight", "thurstone_gamma", "fidelity_eps",
            "num_train_epochs", "max_steps", "seed")},
        **({"compare": compare} if compare else {}),
        "train_loss": train_loss,
        "warnings": warnings,
    }
    if trainer.accelerator.is_main_process:
        write_model_card(out, lineage)
    return {"output_dir": str(out), "global_steps": trainer.state.global_step,
            "train_loss": train_loss, **data_summary}
