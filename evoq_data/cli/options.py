"""Options shared by several commands, each declared once: single options as ``Annotated``
aliases, the generation options as the fields of :class:`GenerationOptions`.

Every command that asks a judge for answers (``vote``, ``score``, ``compare``, ``demo``)
takes the generation options through :func:`generation_options` and receives them as one
checked :class:`~evoq_data.generation.spec.GenerationSpec`, so the commands accept the same
options and apply the same checks. ``evoq-train evolve`` declares its ``--max-tokens`` and
``--engine-arg`` with :func:`generation_field`, from the same fields.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Annotated

import typer

from evoq_data.cli.app import silence_progress_bars
from evoq_data.cli.fields import dataclass_options, flag_of
from evoq_data.generation.spec import GenerationSpec

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars (also none from the libraries evoq drives).", callback=silence_progress_bars)]
Seed = Annotated[int, typer.Option("--seed", help="Random seed (recorded with the output).")]


@dataclass
class GenerationOptions:
    """How a command's judge generates its answers: engine, model and sampling."""

    engine: str = field(default="transformers", metadata={
        "help": "Engine: transformers, vllm, openai or piqe."})
    model: str | None = field(default=None, metadata={
        "help": "Model: Hub id or local checkpoint folder (Qwen2.5-VL family)."})
    model_revision: str | None = field(default=None, metadata={
        "help": "Model revision to load and record (Hub branch, tag or commit)."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling top-p."})
    max_tokens: int = field(default=1024, metadata={"help": "Max new tokens per answer."})
    reasoning: bool = field(default=True, metadata={
        "flag": "--reasoning/--no-reasoning",
        "help": "Append the paper's reasoning suffix (answer in \\boxed{})."})
    base_url: str | None = field(default=None, metadata={
        "help": "openai engine: the endpoint, e.g. http://127.0.0.1:8000/v1"})
    concurrency: int = field(default=8, metadata={
        "help": "openai engine: requests in flight at once."})
    engine_arg: list[str] = field(default_factory=list, metadata={
        "help": "Extra engine setting KEY=VALUE (repeatable), e.g. tensor_parallel_size=2, "
                "gpu_memory_utilization=0.9, dtype=bfloat16."})

    def spec(self) -> GenerationSpec:
        """The options as one checked spec (one line on stderr for a bad combination)."""
        return GenerationSpec.from_options(**dataclasses.asdict(self))


def generation_options(**defaults):
    """Give a command the generation options; it receives them as ``spec: GenerationSpec``.

    ``defaults`` are the command's own defaults by field name (``demo``: ``engine="piqe"``).

    Example::

        @app.command("score")
        @generation_options()
        def score_cmd(images: ..., spec: GenerationSpec, ...) -> None: ...
    """
    return dataclass_options(GenerationOptions, into="spec", defaults=defaults,
                             convert=GenerationOptions.spec)


def generation_field(name: str, **checks):
    """A field of another settings dataclass that is the generation option ``name``: the same
    option, help and default (``evoq-train evolve``'s ``--max-tokens``, ``--engine-arg``),
    with that dataclass's own ``checks`` (``min=1``)."""
    f = next(f for f in dataclasses.fields(GenerationOptions) if f.name == name)
    metadata = {**f.metadata, "flag": flag_of(f), **checks}
    if f.default_factory is not dataclasses.MISSING:
        return field(default_factory=f.default_factory, metadata=metadata)
    return field(default=f.default, metadata=metadata)
