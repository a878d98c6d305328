"""The command lines of an evolve run's child steps: pure functions of the run's settings,
sources and layout (and, where a command depends on what an earlier step made, of the facts
read for it, passed in). They read and write nothing, so the whole plan of a run can be
built and checked without a model (tests/test_evolve_plan.py).

Every command is one a user could type (``evoq-data pairs|distort|vote|aggregate|push|score|
eval``, ``evoq-train grpo``, under ``accelerate launch`` when an accelerate config is given);
every path in it is relative to RUN, the children's working directory.
"""

from __future__ import annotations

import sys

from evoq_data.core.ids import SEED_LIMIT, digest_u64

from .config import OPTION_ARGS, parse_key_values, parse_train_args
from .context import RunContext, Voter


def derived_seed(seed: int, what: str, round_: int) -> int:
    """The seed of one choice of one round, from the run seed (never from run order)."""
    return digest_u64("evoq-evolve", seed, what, round_) % SEED_LIMIT


def data_command(*args) -> list[str]:
    return [sys.executable, "-m", "evoq_data.cli", *map(str, args)]


def train_command(ctx: RunContext, *args) -> list[str]:
    if ctx.sources.accelerate_config:
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                  ctx.sources.accelerate_config, "-m"]
    else:
        launch = [sys.executable, "-m"]
    return [*launch, "evoq_train.cli", *map(str, args)]


def engine_options(engine: str, model: str | None, args: tuple[str, ...] | list[str]) -> list[str]:
    out = ["--engine", engine]
    if model:
        out += ["--model", model]
    for key, value in parse_key_values(list(args), "--engine-arg").items():
        out += [OPTION_ARGS[key], value] if key in OPTION_ARGS else \
            ["--engine-arg", f"{key}={value}"]
    return out


def pairs_argv(ctx: RunContext, r: int) -> list[str]:
    s = ctx.settings
    return data_command("pairs", "--images", ctx.sources.pool, "--num-pairs", s.pairs_per_round,
                        "--seed", derived_seed(s.seed, "pairs", r),
                        "--out", ctx.random_pairs(r), "--quiet")


def distort_argv(ctx: RunContext, r: int) -> list[str]:
    rl = ctx.layout.round(r)
    return data_command("distort", "--images", rl.references, "--out", rl.distorted,
                        "--seed", derived_seed(ctx.settings.seed, "distort", r), "--quiet")


def synthetic_pairs_argv(ctx: RunContext, r: int, available: int) -> list[str]:
    """``available``: the synthetic pairs the round's distorted folder can give."""
    rl = ctx.layout.round(r)
    return data_command("pairs", "--synthetic", rl.distorted,
                        "--num-pairs", min(ctx.settings.synthetic_pairs, available),
                        "--seed", derived_seed(ctx.settings.seed, "synthetic-pairs", r),
                        "--out", rl.synthetic_pairs)


def vote_argv(ctx: RunContext, r: int) -> list[str]:
    s, rl = ctx.settings, ctx.layout.round(r)
    v: Voter = ctx.voter(r)
    return data_command("vote", "--pairs", rl.pairs, "--out", rl.votes,
                        "--votes-per-pair", s.votes_per_pair,
                        "--seed", derived_seed(s.seed, "vote", r), "--max-tokens", s.max_tokens,
                        *engine_options(v.engine, v.model, v.args), *s.vote_args, "--quiet")


def aggregate_argv(ctx: RunContext, r: int) -> list[str]:
    s, rl = ctx.settings, ctx.layout.round(r)
    return data_command("aggregate", "--votes", rl.votes, "--out", rl.prefs,
                        "--lineage", rl.voted_by, *s.aggregate_args, "--quiet")


def push_argv(ctx: RunContext, r: int) -> list[str]:
    rl, local = ctx.layout.round(r), ctx.dataset_dir(r)
    where = ["--local-dir", local] if local else []
    return data_command("push", "--prefs", rl.prefs, "--repo-id", ctx.repo_id,
                        "--version", rl.version, *where, "--quiet")


def dataset_args(ctx: RunContext, r: int) -> list[str]:
    if ctx.hub:
        return ["--dataset", ctx.repo_id, "--revision", ctx.layout.round(r).version]
    return ["--dataset", ctx.dataset_dir(r)]


def grpo_argv(ctx: RunContext, r: int, resume: bool) -> list[str]:
    """``resume``: the output folder holds a complete checkpoint to continue from."""
    again = ["--resume-from-checkpoint", "true"] if resume else []
    return train_command(ctx, "grpo", "--config", ctx.sources.recipe, *dataset_args(ctx, r),
                         "--model", ctx.parent(r).path,
                         "--output-dir", ctx.layout.round(r).model, *again,
                         "--disable_tqdm", "true", *parse_train_args(ctx.settings.train_args))


def scored_model(ctx: RunContext, r: int) -> str:
    """The model round r's eval scores: the base model for round 0."""
    return ctx.sources.base_model if r == 0 else ctx.layout.round(r).model


def score_argv(ctx: RunContext, r: int) -> list[str]:
    s = ctx.settings
    return data_command("score", "--images", ctx.layout.eval_images(),
                        "--samples", s.score_samples, "--seed", s.seed,
                        "--max-tokens", s.max_tokens,
                        *engine_options(s.engine, scored_model(ctx, r), s.engine_args),
                        "--out", ctx.layout.round(r).scores, "--quiet")


def eval_argv(ctx: RunContext, r: int, sets: list[str]) -> list[str] | None:
    """``sets``: the eval sets with enough valid scores to evaluate (None: none has)."""
    rl = ctx.layout.round(r)
    labels = []
    for name, path in ctx.sources.evals:
        if name in sets:
            labels += ["--labels", f"{name}={path}"]
    return data_command("eval", "--scores", rl.scores, *labels, "--out", rl.eval) \
        if labels else None


def label_accuracy_argv(ctx: RunContext, r: int) -> list[str]:
    """``evoq-data eval --prefs``: the round's pseudo-labels against --pool-labels (measured
    only: no other step reads its output)."""
    rl = ctx.layout.round(r)
    return data_command("eval", "--prefs", rl.prefs, "--labels",
                        f"pool={ctx.sources.pool_labels}", "--out", rl.label_accuracy)
