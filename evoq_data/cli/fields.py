"""Settings declared once, as dataclass fields, turned into command-line options and read from
settings files.

A setting is one field: its type, its default and ``metadata`` (as TRL declares GRPOConfig):

* ``help``: the option's help text;
* ``flag``: the option, when not ``--`` + the field name with dashes (``--engine-arg`` for
  ``engine_args``; ``--eval-base/--no-eval-base`` for an on/off pair);
* ``aliases``: more spellings of the option (``-k``);
* ``choices`` and ``min``: checked by :func:`check_fields` with a line naming the option
  (``hint``: words added to that line for a given wrong value).

:func:`dataclass_options` makes a command's Typer options from the fields;
:func:`settings_from_mapping` takes the mapping of a settings file (read by the one YAML
reader, :func:`evoq_train.recipes.read_yaml_mapping`; keys: a field's name or its option's,
dashes or underscores) and checks each value against the field's type.

Why Typer and not ``HfArgumentParser`` (which ``evoq-train grpo`` keeps, through
``EvoqTrlParser``, for TRL's own dataclasses): these commands stay like evoq's other Typer
commands, with their help panel, their repeatable options (``HfArgumentParser`` makes a list
field ``nargs="+"``, so a second ``--engine-arg`` would replace the first) and usage errors
with exit code 2. And a settings file is read strictly here: ``EvoqTrlParser`` passes a
file's scalars through the field's type as text, so ``repo_id: 5`` would become ``"5"``; here
it is refused, naming the key.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any

import typer

from evoq_data.core.errors import EvoqError

# The spellings of on and off a settings file may give as text (the command line's own).
TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")


# --- one field -----------------------------------------------------------------------------

def field_types(cls) -> dict[str, Any]:
    """Each field's type, resolved (``str | None``, ``list[str]``...)."""
    return typing.get_type_hints(cls)


def _base(kind) -> tuple[Any, bool]:
    """(type without None, whether None is allowed)."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return kind, False


def _is_list(kind) -> bool:
    return typing.get_origin(kind) is list


def flag_of(f: dataclasses.Field) -> str:
    """A field's option as written in help and messages (``--engine-arg``,
    ``--eval-base/--no-eval-base``)."""
    return f.metadata.get("flag", "--" + f.name.replace("_", "-"))


def option_label(cls, name: str) -> str:
    """The option of field ``name`` of ``cls``."""
    return flag_of(_fields(cls)[name])


def _fields(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _parameter(f: dataclasses.Field, kind, default) -> inspect.Parameter:
    """The Typer parameter of a field."""
    base, _ = _base(kind)
    option = typer.Option(flag_of(f), *f.metadata.get("aliases", []), help=f.metadata["help"])
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[base | None if default is None else base,
                                                  option])


# --- the command line ----------------------------------------------------------------------

CONTEXT = "_dataclass_options_ctx"  # the Typer context, to tell given options from defaults


def dataclass_options(cls, *, into: str, layered: bool = False, defaults: dict | None = None,
                      convert: Callable | None = None) -> Callable:
    """A decorator: the command's parameter ``into`` becomes one Typer option per field of
    ``cls`` (default: the field's, or ``defaults``, a command's own, by field name), in field
    order, where ``into`` stood in the signature. The command gets:

    * ``layered=False``: ``convert(cls(**values))`` (or the dataclass itself);
    * ``layered=True``: a dict of the options given on the command line, by field name, so
      that a settings file can sit between the fields' defaults and the command line.
    """
    fields = dataclasses.fields(cls)
    kinds = field_types(cls)
    own = dict(defaults or {})
    unknown = set(own) - {f.name for f in fields}
    if unknown:
        raise TypeError(f"{cls.__name__} has no field(s) {sorted(unknown)}")
    # a field whose default comes from a factory (a list) gets None, "the field's default"
    params = [_parameter(f, kinds[f.name], own.get(f.name, None if f.default is
                                                   dataclasses.MISSING else f.default))
              for f in fields]
    names = [p.name for p in params]
    by_name = {f.name: f for f in fields}

    def decorate(func: Callable) -> Callable:
        sig = inspect.signature(func, eval_str=True)
        if into not in sig.parameters:
            raise TypeError(f"{func.__name__} has no parameter {into!r}")
        clash = set(names) & (set(sig.parameters) - {into})
        if clash:
            raise TypeError(f"{func.__name__}: parameters {sorted(clash)} are fields of "
                            f"{cls.__name__}")
        new = [inspect.Parameter(CONTEXT, inspect.Parameter.KEYWORD_ONLY,
                                 annotation=typer.Context)]
        for p in sig.parameters.values():
            new += params if p.name == into else [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)]

        @functools.wraps(func)
        def command(**kwargs):
            ctx = kwargs.pop(CONTEXT)
            values = {name: kwargs.pop(name) for name in names}
            if layered:
                kwargs[into] = {k: v for k, v in values.items() if _given(ctx, k)}
            else:
                built = cls(**{k: v for k, v in values.items()
                               if v is not None or by_name[k].default is not dataclasses.MISSING})
                kwargs[into] = convert(built) if convert else built
            return func(**kwargs)

        command.__signature__ = sig.replace(parameters=new)
        command.__annotations__ = {p.name: p.annotation for p in new}
        return command

    return decorate


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether option ``name`` was given (on the command line), not left at its default."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


# --- settings files ------------------------------------------------------------------------

def keys_of(cls) -> dict[str, str]:
    """Every key a settings file may use for a field of ``cls``: the field's name and its
    long options' (``--engine-arg`` -> ``engine_arg``), dashes read as underscores."""
    out = {}
    for f in dataclasses.fields(cls):
        out[f.name] = f.name
        for decl in [flag_of(f).split("/")[0], *f.metadata.get("aliases", [])]:
            if decl.startswith("--"):
                out[decl[2:].replace("-", "_")] = f.name
    return out


def settings_from_mapping(cls, data: dict, source: str) -> dict:
    """A settings file's mapping -> ``{field name: value}``, every key known and every value
    of its field's type (see :func:`check_value`); else one line naming ``source`` and the
    key."""
    keys, kinds = keys_of(cls), field_types(cls)
    out = {}
    for key, value in data.items():
        name = keys.get(str(key).lstrip("-").replace("-", "_"))
        if name is None:
            raise EvoqError(f"{source}: unknown setting {key!r} (known: "
                            f"{', '.join(f.name for f in dataclasses.fields(cls))})")
        if name in out:
            raise EvoqError(f"{source}: {name} is set twice (as {key!r} and another spelling)")
        out[name] = check_value(value, kinds[name], f"{source}: {key}")
    return out


def check_value(value, kind, where: str):
    """``value`` (as a YAML file gives it) as a value of type ``kind``, or one line.

    Text fields take text only (a number or a list given for a path or a name is refused);
    integers and floats take numbers or their text; booleans take true/false or their
    spellings (yes/no, on/off, 1/0 as text); a list of text takes one item, a list, or a
    mapping ``{KEY: VALUE}`` read as ``KEY=VALUE`` items (non-text values written as JSON).
    None is taken where the field allows it; for a list it is the empty list.
    """
    base, optional = _base(kind)
    if value is None:
        if _is_list(base):
            return []
        if optional:
            return None
        raise EvoqError(f"{where} must be set ({_describe(base)}), got null")
    if _is_list(base):
        if isinstance(value, dict):
            return [f"{k}={_text(v, where)}" for k, v in value.items()]
        if isinstance(value, str):
            return [value]
        if isinstance(value, list):
            return [_text(v, where) for v in value]
        raise EvoqError(f"{where} must be a list (or a KEY: VALUE mapping), got {value!r}")
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in TRUE_WORDS + FALSE_WORDS:
            return value.strip().lower() in TRUE_WORDS
    elif base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
    elif base is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
    elif base is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (bool, int, float)):
            raise EvoqError(f"{where} must be text, got {value!r} (quote it in YAML: "
                            f"'{value}')")
    raise EvoqError(f"{where} must be {_describe(base)}, got {value!r}")


def _describe(base) -> str:
    return {bool: "true or false", int: "an integer", float: "a number",
            str: "text"}.get(base, str(base))


def _text(value, where: str) -> str:
    """An item of a list setting as text: text as it is, anything else YAML can give as JSON
    (``true``, ``2``, ``{"image": 2}``), the form ``--engine-arg`` values are read in."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value)
    except TypeError:  # a date, say
        raise EvoqError(f"{where}: cannot read {value!r} as text; quote it") from None


# --- checks --------------------------------------------------------------------------------

def check_fields(obj) -> None:
    """The checks the fields of ``obj`` declare (``choices``, ``min``), one line each."""
    kinds = field_types(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        base, optional = _base(kinds[f.name])
        if value is None and optional:
            continue
        option = flag_of(f)
        if "min" in f.metadata:
            low = f.metadata["min"]
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise EvoqError(f"{option} must be an integer of at least {low}, got {value!r}")
        if "choices" in f.metadata and value not in f.metadata["choices"]:
            raise EvoqError(f"{option} must be one of {', '.join(f.metadata['choices'])}, got "
                            f"{value!r}{f.metadata.get('hint', {}).get(value, '')}")
