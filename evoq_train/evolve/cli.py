"""The ``evoq-train evolve`` and ``evoq-train lineage`` commands (registered on the
``evoq-train`` app in :mod:`evoq_train.cli`). Light to import: the work is in :mod:`.run`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from evoq_data.cli.options import Quiet


def evolve_cmd(
    pool: Annotated[str | None, typer.Option("--pool", help="Image pool: a folder (recursive) or a HF dataset; fresh random pairs are drawn from it each round.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Base model BASE: Hub id or checkpoint folder (Qwen2.5-VL family).")] = None,
    rounds: Annotated[int | None, typer.Option("--rounds", help="T: rounds of vote -> aggregate -> publish -> GRPO (paper: 2). May be raised later to continue a run.")] = None,
    run_dir: Annotated[str | None, typer.Option("--run-dir", help="RUN: state.json, lineage.json, report, logs and each round's files.")] = None,
    repo_id: Annotated[str | None, typer.Option("--repo-id", help="Publish round r as version round-r of this Hub dataset OWNER/NAME.")] = None,
    local_dir: Annotated[str | None, typer.Option("--local-dir", help="Write version round-r to DIR/round-r instead (default without --repo-id: RUN/datasets).")] = None,
    pairs_per_round: Annotated[int | None, typer.Option("--pairs-per-round", help="Random pairs per round (paper: 20000).")] = None,
    votes_per_pair: Annotated[int | None, typer.Option("--votes-per-pair", "-k", help="K votes per pair (paper: 32).")] = None,
    engine: Annotated[str | None, typer.Option("--engine", help="Engine the run's models vote and score with: vllm (GPUs) or transformers (default).")] = None,
    engine_arg: Annotated[list[str] | None, typer.Option("--engine-arg", help="KEY=VALUE for that engine (repeatable), e.g. tensor_parallel_size=2.")] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", help="Max new tokens per vote and score answer (default 1024).")] = None,
    vote_arg: Annotated[list[str] | None, typer.Option("--vote-arg", help="An extra `evoq-data vote` option for every round (repeatable), e.g. --vote-arg=--chunk-pairs=256.")] = None,
    train_config: Annotated[str | None, typer.Option("--train-config", help="GRPO recipe: shipped name or YAML file (default qwen2.5-vl-7b-8xa100).")] = None,
    train_arg: Annotated[list[str] | None, typer.Option("--train-arg", help="KEY=VALUE training setting overriding the recipe (repeatable), e.g. max_steps=100.")] = None,
    accelerate_config: Annotated[str | None, typer.Option("--accelerate-config", help="Run GRPO under `accelerate launch --config_file FILE` (a file or a shipped name such as accelerate/zero3); default: one plain process.")] = None,
    evals: Annotated[list[str] | None, typer.Option("--eval", help="NAME=LABELS (repeatable): a CSV/TSV/Parquet manifest with mos and a path column; each round's model (and the base model) is scored on its images and evaluated.")] = None,
    eval_base: Annotated[bool | None, typer.Option("--eval-base/--no-eval-base", help="Also evaluate the base model as round 0 (default on with --eval).")] = None,
    score_samples: Annotated[int | None, typer.Option("--score-samples", help="K score samples per eval image (default 8).")] = None,
    bootstrap_engine: Annotated[str | None, typer.Option("--bootstrap-engine", help="Who votes round 1: piqe, openai, transformers or vllm (default: BASE with --engine).")] = None,
    bootstrap_model: Annotated[str | None, typer.Option("--bootstrap-model", help="The bootstrap judge's model (openai: the served model's name).")] = None,
    bootstrap_arg: Annotated[list[str] | None, typer.Option("--bootstrap-arg", help="KEY=VALUE for the bootstrap engine (repeatable), e.g. base_url=http://host:8000/v1.")] = None,
    synthetic_pairs: Annotated[int | None, typer.Option("--synthetic-pairs", help="From round 2 on, add N pairs of distorted variants of pool images (known order), as in the paper's round 2.")] = None,
    init_from: Annotated[str | None, typer.Option("--init-from", help="previous: round r trains from the model of round r-1 (default); base: from BASE.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Run seed; each round's pair, vote and synthetic seeds derive from it.")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML file setting any of these options by name (the command line wins).")] = None,
    quiet: Quiet = False,
) -> None:
    """Run the self-evolution loop for T rounds, resumable anywhere (docs/evolve.md).

    Each round: pairs -> vote (the previous round's model) -> aggregate -> publish version
    round-r -> GRPO -> score + eval. Rerun the same command after a crash to continue; rerunning with other settings into the
    same RUN is refused. Each step is its own process; logs in RUN/logs/.

    Example: evoq-train evolve --pool ./koniq-train --model Qwen/Qwen2.5-VL-7B-Instruct
    --rounds 2 --engine vllm --train-config qwen2.5-vl-7b-8xa100
    --accelerate-config accelerate/zero3 --repo-id me/evoq-koniq --eval koniq=koniq_test.csv
    --run-dir runs/evo
    """
    from .config import EvolveSettings
    from .run import run_evolve

    settings = EvolveSettings.build(config, {
        "pool": pool, "model": model, "rounds": rounds, "run_dir": run_dir,
        "repo_id": repo_id, "local_dir": local_dir, "pairs_per_round": pairs_per_round,
        "votes_per_pair": votes_per_pair, "engine": engine, "engine_args": engine_arg,
        "max_tokens": max_tokens, "vote_args": vote_arg, "train_config": train_config,
        "train_args": train_arg, "accelerate_config": accelerate_config, "evals": evals,
        "eval_base": eval_base, "score_samples": score_samples,
        "bootstrap_engine": bootstrap_engine, "bootstrap_model": bootstrap_model,
        "bootstrap_args": bootstrap_arg, "synthetic_pairs": synthetic_pairs,
        "init_from": init_from, "seed": seed,
    })
    typer.echo(json.dumps(run_evolve(settings, quiet=quiet), indent=2, default=str))


def lineage_cmd(
    run_dir: Annotated[Path, typer.Argument(help="RUN folder of `evoq-train evolve`.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print lineage.json instead of the table.")] = False,
) -> None:
    """Print which model voted each dataset version and what each model was trained from.

    Example: evoq-train lineage runs/evo
    """
    from .lineage import lineage_table, read_lineage

    doc = read_lineage(run_dir)
    typer.echo(json.dumps(doc, indent=2) if as_json else lineage_table(doc), nl=as_json)
