"""Options shared by several commands, defined once as ``Annotated`` aliases.

The generation options (:data:`GENERATION_OPTIONS`) are taken by every command that asks a
judge for answers (``vote``, ``score``, ``compare``, ``demo``) and turned into one
:class:`~evoq_data.generation.spec.GenerationSpec` by :func:`generation_spec`, so the commands
accept the same options and apply the same checks.
"""

from __future__ import annotations

from typing import Annotated

import typer

from evoq_data.cli.app import silence_progress_bars
from evoq_data.generation.spec import GenerationSpec

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars (also none from the libraries evoq drives).", callback=silence_progress_bars)]
Seed = Annotated[int, typer.Option("--seed", help="Random seed (recorded with the output).")]
ModelOpt = Annotated[
    str | None,
    typer.Option("--model", help="Model: Hub id or local checkpoint folder (Qwen2.5-VL family)."),
]
ModelRevision = Annotated[
    str | None,
    typer.Option("--model-revision", help="Model revision to load and record (Hub branch, tag or commit)."),
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



# The option names (without dashes) every generating command takes.
GENERATION_OPTIONS = ("engine", "model", "model-revision", "temperature", "top-p",
                      "max-tokens", "reasoning", "base-url", "concurrency", "engine-arg")


def generation_spec(*, engine: str, model: str | None, model_revision: str | None,
                    temperature: float, top_p: float, max_tokens: int, reasoning: bool,
                    base_url: str | None, concurrency: int,
                    engine_arg: list[str] | None) -> GenerationSpec:
    """The generation options of a command as one checked spec."""
    return GenerationSpec.from_options(
        engine=engine, model=model, model_revision=model_revision, temperature=temperature,
        top_p=top_p, max_tokens=max_tokens, reasoning=reasoning, base_url=base_url,
        concurrency=concurrency, engine_arg=engine_arg)
