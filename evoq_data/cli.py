"""``evoq-data``: the data plane's command line (one thin command per stage).

Exit codes: 0 success, 1 a user or data error (one line on stderr), 2 a usage error (Typer).
Results and paths go to stdout; progress bars and logs to stderr.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from . import __version__
from .errors import EvoqError

app = typer.Typer(
    name="evoq-data",
    help="Make, publish and evaluate EvoQuality pseudo-preference datasets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Shared options, defined once.
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed (recorded with the output).")]
ModelOpt = Annotated[
    str | None,
    typer.Option("--model", help="Model: Hub id or local checkpoint folder (Qwen2.5-VL family)."),
]
EngineOpt = Annotated[
    str, typer.Option("--engine", help="Engine: transformers, vllm, openai or piqe.")
]
Temperature = Annotated[float, typer.Option("--temperature", help="Sampling temperature.")]
TopP = Annotated[float, typer.Option("--top-p", help="Nucleus sampling top-p.")]
MaxTokens = Annotated[int, typer.Option("--max-tokens", help="Max new tokens per answer.")]
Reasoning = Annotated[
    bool,
    typer.Option("--reasoning/--no-reasoning",
                 help="Append the paper's reasoning suffix (answer in \\boxed{}).")
]
BaseUrl = Annotated[
    str | None,
    typer.Option("--base-url", help="openai engine: the endpoint, e.g. http://127.0.0.1:8000/v1"),
]
Concurrency = Annotated[
    int, typer.Option("--concurrency", help="openai engine: requests in flight at once.")
]
EngineArg = Annotated[
    list[str] | None,
    typer.Option("--engine-arg",
                 help="Extra engine setting KEY=VALUE (repeatable), e.g. "
                      "tensor_parallel_size=2, gpu_memory_utilization=0.9, dtype=bfloat16."),
]


def _engine_options(engine: str, base_url: str | None, concurrency: int,
                    engine_args: list[str] | None) -> dict:
    opts: dict = {}
    for item in engine_args or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise EvoqError(f"--engine-arg expects KEY=VALUE, got {item!r}")
        try:
            opts[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            opts[key.strip()] = value
    if engine == "openai":
        if not base_url:
            raise EvoqError("engine 'openai' needs --base-url (e.g. http://127.0.0.1:8000/v1)")
        opts.update(base_url=base_url, concurrency=concurrency)
    return opts


def _emit(summary: dict) -> None:
    typer.echo(json.dumps(summary, indent=2, default=str))


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO level.")] = False,
) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")


@app.command("version")
def version_cmd() -> None:
    """Print the evoq version."""
    typer.echo(__version__)


@app.command("pairs")
def pairs_cmd(
    images: Annotated[str, typer.Option("--images", help="Image folder (recursive) or HF dataset (folder or Hub id).")],
    num_pairs: Annotated[int | None, typer.Option("--num-pairs", help="Distinct random pairs to sample.")] = None,
    out: Annotated[Path, typer.Option("--out", help="Output pairs Parquet file.")] = Path("pairs.parquet"),
    seed: Seed = 0,
    image_column: Annotated[str, typer.Option("--image-column", help="Image column of a HF dataset.")] = "image",
    split: Annotated[str, typer.Option("--split", help="Split of a HF dataset.")] = "train",
    max_pixels: Annotated[int | None, typer.Option("--max-pixels", help="Skip images above this many pixels (decompression-bomb guard).")] = None,
    quiet: Quiet = False,
) -> None:
    """Sample distinct random image pairs from a pool.

    Example: evoq-data pairs --images ./pool --num-pairs 20000 --seed 0 --out pairs.parquet
    """
    from .pairs import run_pairs

    if num_pairs is None:
        raise EvoqError("--num-pairs is required")
    summary = run_pairs(images, num_pairs, seed, out, image_column=image_column, split=split,
                        max_pixels=max_pixels, quiet=quiet)
    for skip in summary["skipped"]:
        typer.echo(f"skipped {skip['path']}: {skip['reason']}", err=True)
    summary["skipped"] = len(summary["skipped"])
    _emit(summary)


@app.command("vote")
def vote_cmd(
    pairs: Annotated[Path, typer.Option("--pairs", help="Pairs Parquet from `evoq-data pairs`.")],
    out: Annotated[Path, typer.Option("--out", help="VOTES_DIR: raw vote shards + manifest.json.")],
    model: ModelOpt = None,
    engine: EngineOpt = "transformers",
    votes_per_pair: Annotated[int, typer.Option("--votes-per-pair", "-k", help="K sampled votes per pair (paper: 32).")] = 32,
    seed: Seed = 0,
    temperature: Temperature = 1.0,
    top_p: TopP = 1.0,
    max_tokens: MaxTokens = 1024,
    reasoning: Reasoning = True,
    order: Annotated[str, typer.Option("--order", help="random: swap shown order per vote (paper); balanced: exactly K/2 each way.")] = "random",
    num_shards: Annotated[int, typer.Option("--num-shards", help="Workers splitting the pairs.")] = 1,
    shard_index: Annotated[int, typer.Option("--shard-index", help="This worker's index in [0, num-shards).")] = 0,
    chunk_pairs: Annotated[int, typer.Option("--chunk-pairs", help="Pairs per engine batch and per shard file (the most a crash can lose).")] = 64,
    model_revision: Annotated[str | None, typer.Option("--model-revision", help="Model revision (Hub branch, tag or commit).")] = None,
    base_url: BaseUrl = None,
    concurrency: Concurrency = 8,
    engine_arg: EngineArg = None,
    quiet: Quiet = False,
) -> None:
    """Ask the model K times per pair which image is better; keep every raw answer.

    Example: evoq-data vote --pairs pairs.parquet --model Qwen/Qwen2.5-VL-7B-Instruct
    --engine vllm --votes-per-pair 32 --out votes/
    """
    from .votes import run_vote

    opts = _engine_options(engine, base_url, concurrency, engine_arg)
    if model_revision:
        opts.setdefault("revision", model_revision)
    summary = run_vote(pairs, model, engine, out, votes_per_pair=votes_per_pair, seed=seed,
                       temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                       reasoning=reasoning, order=order, num_shards=num_shards,
                       shard_index=shard_index, chunk_pairs=chunk_pairs,
                       model_revision=model_revision, engine_options=opts, quiet=quiet)
    _emit(summary)


# --- further stages register below (aggregate, push, score, compare, eval, distort, demo) ---


def main() -> None:
    """Console entry point: EvoqError -> one line on stderr and exit code 1."""
    try:
        app()
    except EvoqError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
