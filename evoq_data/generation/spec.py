"""One description of how answers are generated, and one way to open an engine from it.

``vote``, ``score``, ``compare`` and ``demo`` (and ``evoq-train evolve``) all build a
:class:`GenerationSpec` and call :func:`open_engine`, so they take the same options and apply
the same checks:

* the engine is one of :data:`ENGINES`;
* ``transformers`` and ``vllm`` need a model (a Hub id or a local Qwen2.5-VL checkpoint),
  ``openai`` may name one (default: the one model the endpoint serves), ``piqe`` takes none;
* ``openai`` needs a base URL;
* every engine argument must be one the engine takes (checked when the engine is built);
* sampling settings are in range (:class:`Sampling`).

Two revisions are kept apart: ``model_revision`` is what to *load* (a Hub branch, tag or
commit, passed to the engine as ``revision``), and :meth:`GenerationSpec.provenance_revision`
is what to *record* (that revision, a content hash of a local folder, or the PIQE version).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from evoq_data.core.errors import EvoqError
from evoq_data.generation.engines import (
    ENGINES,
    Engine,
    Sampling,
    check_engine_options,
    get_engine,
)
from evoq_data.generation.prompts import Prompt, compare_prompt, score_prompt

# Whether an engine needs a model: "required", "optional" (it can find one) or "none".
MODEL_RULE = {"transformers": "required", "vllm": "required", "openai": "optional",
              "piqe": "none"}


def parse_engine_args(items: list[str] | None) -> dict:
    """``KEY=VALUE`` strings -> a dict; values are read as JSON where they parse
    (``2`` -> 2, ``true`` -> True, ``{"image": 2}`` -> dict), else kept as text."""
    opts: dict = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise EvoqError(f"--engine-arg expects KEY=VALUE, got {item!r}")
        try:
            opts[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            opts[key.strip()] = value
    return opts


# The files of a local model folder that decide its answers: weights (what vLLM and
# from_pretrained read), configs, tokenizer, processor and chat template. Checkpoint-N folders,
# optimizer and trainer state, logs and cards beside them do not.
MODEL_FILES = ("*.safetensors", "*.bin", "*.index.json", "config.json", "generation_config.json",
               "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json",
               "vocab.txt", "merges.txt", "special_tokens_map.json", "added_tokens.json",
               "*preprocessor_config.json", "processor_config.json", "chat_template.*",
               "additional_chat_templates/*.jinja")
NOT_WEIGHTS = ("training_args.bin", "optimizer.bin")  # *.bin the trainer writes beside them


def model_files(path: Path) -> list[Path]:
    """The files of ``MODEL_FILES`` in a model folder, sorted."""
    found = {p for pattern in MODEL_FILES for p in path.glob(pattern) if p.is_file()}
    return sorted(p for p in found if p.name not in NOT_WEIGHTS)


def model_revision_of(model: str | None, revision: str | None = None,
                      engine: str | None = None) -> str:
    """A revision for provenance: the given one, the PIQE implementation's version for the
    weightless ``piqe`` judge, or a hash of a local model folder's weights and configs
    (:data:`MODEL_FILES`: the same weights give the same revision whatever sits beside them);
    "unknown" for a Hub id loaded without ``--model-revision`` or a folder with none of them."""
    if revision:
        return revision
    if engine == "piqe":
        from evoq_data.generation.engines.piqe import piqe_revision

        return piqe_revision()
    if not model:
        return "unknown"
    path = Path(model)
    files = model_files(path) if path.is_dir() else []
    if not files:
        return "unknown"
    h = hashlib.sha256()
    for p in files:
        h.update(p.relative_to(path).as_posix().encode())
        size = p.stat().st_size
        h.update(str(size).encode())
        with open(p, "rb") as fh:
            if size <= 16 * 2**20:
                h.update(fh.read())
            else:  # big weight shards: head and tail are enough to tell versions apart
                h.update(fh.read(2**20))
                fh.seek(-(2**20), os.SEEK_END)
                h.update(fh.read())
    return "sha256:" + h.hexdigest()


@dataclass(frozen=True)
class GenerationSpec:
    """Engine, model and sampling of a run: everything that decides its answers."""

    engine: str = "transformers"
    model: str | None = None
    model_revision: str | None = None  # to load (and record); None: the default branch
    sampling: Sampling = field(default_factory=Sampling)
    reasoning: bool = True
    engine_args: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise EvoqError(f"unknown engine {self.engine!r}; choose one of "
                            f"{', '.join(ENGINES)}")
        rule = MODEL_RULE[self.engine]
        if rule == "required" and not self.model:
            raise EvoqError(f"engine {self.engine!r} needs --model (a Hub id or a local "
                            "Qwen2.5-VL checkpoint folder)")
        if rule == "none" and self.model:
            raise EvoqError(f"engine {self.engine!r} takes no --model (got {self.model!r}); "
                            "it is a classical metric with no weights")
        if rule == "none" and self.model_revision:
            raise EvoqError(f"engine {self.engine!r} takes no --model-revision")
        if self.engine == "openai" and not self.engine_args.get("base_url"):
            raise EvoqError("engine 'openai' needs --base-url (e.g. http://127.0.0.1:8000/v1)")
        check_engine_options(self.engine, {k: v for k, v in self.engine_args.items()
                                           if k != "revision"})
        if self.model and Path(self.model).is_dir():
            # "ckpt/" and "./ckpt" are the same model
            object.__setattr__(self, "model", os.path.normpath(self.model))

    @classmethod
    def from_options(cls, *, engine: str, model: str | None = None,
                     model_revision: str | None = None, temperature: float = 1.0,
                     top_p: float = 1.0, max_tokens: int = 1024, reasoning: bool = True,
                     base_url: str | None = None, concurrency: int = 8,
                     engine_arg: list[str] | None = None) -> GenerationSpec:
        """The spec from the command-line options every generating command shares."""
        args = parse_engine_args(engine_arg)
        if engine == "openai":
            args.setdefault("base_url", base_url)
            args.setdefault("concurrency", concurrency)
        elif base_url:
            raise EvoqError(f"--base-url is for engine 'openai', not {engine!r}")
        return cls(engine=engine, model=model, model_revision=model_revision,
                   sampling=Sampling(temperature=temperature, top_p=top_p,
                                     max_tokens=max_tokens),
                   reasoning=reasoning, engine_args=args)

    @property
    def compare_prompt(self) -> Prompt:
        return compare_prompt(self.reasoning)

    @property
    def score_prompt(self) -> Prompt:
        return score_prompt(self.reasoning)

    def provenance_revision(self) -> str:
        """The revision recorded with every answer (see the module docstring)."""
        return model_revision_of(self.model, self.model_revision, self.engine)

    def provenance(self) -> dict:
        """The spec's fields as recorded in manifests (no secrets: the openai engine's key
        lives in the environment, and credentials in a base URL are dropped)."""
        from urllib.parse import urlsplit, urlunsplit

        args = dict(self.engine_args)
        if isinstance(args.get("base_url"), str):
            parts = urlsplit(args["base_url"])
            host = parts.hostname or ""
            netloc = host + (f":{parts.port}" if parts.port else "")
            args["base_url"] = urlunsplit(parts._replace(netloc=netloc))
        return {"engine": self.engine, "model": self.model or self.engine,
                "model_revision": self.provenance_revision(),
                "temperature": self.sampling.temperature, "top_p": self.sampling.top_p,
                "max_tokens": self.sampling.max_tokens, "reasoning": self.reasoning,
                "engine_args": args}


def check_model(spec: GenerationSpec) -> None:
    """Check, before any work, that a model the engine loads is a Qwen2.5-VL checkpoint."""
    if MODEL_RULE[spec.engine] == "required":
        from evoq_data.generation.modeling import check_vlm_checkpoint

        check_vlm_checkpoint(spec.model)


def open_engine(spec: GenerationSpec, revision: str | None = None) -> Engine:
    """Build the engine of ``spec``. ``revision``: the provenance revision if already known
    (a resumed run passes the recorded one; default: computed from the spec)."""
    check_model(spec)
    options = dict(spec.engine_args)
    if spec.model_revision:
        options.setdefault("revision", spec.model_revision)
    return get_engine(spec.engine, spec.model,
                      model_revision=revision or spec.provenance_revision(), **options)


# The openai engine's transport: where it connects, how many requests it sends at once, how
# long it waits and retries. They decide no answer (the served model's id is recorded and
# compared), so a run may be resumed with other values.
RESUMABLE_ENGINE_ARGS = ("base_url", "concurrency", "max_retries", "timeout", "backoff",
                         "max_backoff")


def engine_args_changes(recorded: dict | None, given: dict) -> list[str]:
    """How the engine arguments ``given`` now differ from those ``recorded`` with a run
    (:meth:`GenerationSpec.provenance`'s ``engine_args``), one ``--engine-arg KEY: old ->
    new`` phrase per argument; ``recorded`` None (a run of an older evoq, which did not
    record them) is a difference of its own."""
    if recorded is None:
        return ["--engine-arg: not recorded (made by an older evoq)"]
    missing = object()
    changes = []
    for key in sorted(set(recorded) | set(given)):
        if key in RESUMABLE_ENGINE_ARGS:
            continue
        old, new = recorded.get(key, missing), given.get(key, missing)
        if old != new:
            show = lambda v: "(not given)" if v is missing else repr(v)  # noqa: E731
            changes.append(f"--engine-arg {key}: {show(old)} -> {show(new)}")
    return changes
