"""Recipes: the YAML settings files of the training plane, found by name and read in one way.

A recipe is a flat YAML mapping of ``evoq-train grpo`` options (evoq script arguments, TRL
GRPOConfig and ModelConfig fields), shipped in the folder ``evoq_train/recipes/`` beside this
module and chosen by name, or any YAML file; :func:`evoq_train.config.parse_grpo_args` reads it
with TRL's parser. The same folder ships launcher configs (``accelerate/zero3``).

:func:`resolve_recipe` is the one lookup by name (``--config`` of ``grpo``, ``--train-config``
and ``--accelerate-config`` of ``evolve``, ``recipe-path``); :func:`read_yaml_mapping` is the
one reader of a settings file (a recipe, ``evolve --config``).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from evoq_data.core.errors import EvoqError

# Which shipped files a lookup may name: training recipes (top level), launcher configs, any.
SCOPES = {"recipe": "*.yaml", "accelerate": "accelerate/*.yaml", "any": "**/*.yaml"}


def recipes_dir() -> Path:
    return Path(str(resources.files("evoq_train") / "recipes"))


def shipped(scope: str = "recipe") -> list[str]:
    """The names of the shipped files of ``scope`` (``cpu-smoke``, ``accelerate/zero3``)."""
    root = recipes_dir()
    return sorted(p.relative_to(root).with_suffix("").as_posix()
                  for p in root.glob(SCOPES[scope]))


def available_recipes() -> list[str]:
    """The shipped training recipes."""
    return shipped("recipe")


def resolve_recipe(name_or_path: str, *, scope: str = "recipe", files: bool = True,
                   label: str = "recipe", option: str | None = None) -> Path:
    """A recipe's file: a YAML file path (when ``files``), or the name of a shipped file of
    ``scope``; else one line naming ``label`` (after ``option``) and the names there are."""
    path = Path(name_or_path).expanduser()
    if files and path.is_file():
        return path
    name = str(name_or_path).removesuffix(".yaml")
    names = shipped(scope)
    if name in names:
        return recipes_dir() / f"{name}.yaml"
    raise EvoqError(f"{option + ': ' if option else ''}no {label} {name_or_path!r}: give "
                    f"{'a YAML file or ' if files else ''}one of {', '.join(names)}")


def read_yaml_mapping(path: Path, what: str) -> dict:
    """The mapping of settings a YAML file holds (an empty file: none); one line naming
    ``what`` (``recipe r.yaml``, ``--config evolve.yaml``) when the file is missing, is not
    YAML or holds something other than a mapping."""
    import yaml

    if not Path(path).is_file():
        raise EvoqError(f"{what} not found")
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise EvoqError(f"{what} is not valid YAML: {' '.join(str(exc).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise EvoqError(f"{what} must be a mapping of settings (one KEY: VALUE a line)")
    return data
