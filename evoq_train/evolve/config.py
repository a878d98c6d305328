"""Settings of ``evoq-train evolve``: one dataclass, a YAML ``--config`` that sets the same
fields, and every check that can be made before any work starts.

Precedence: the defaults below < the YAML file < the command line. Defaults follow the paper
where it states a value (20,000 pairs a round, K = 32, T = 2 rounds, the 8x A100 recipe).

The *fingerprint* of a run is the sha256 of :meth:`EvolveSettings.identity`: every setting
that decides what the run makes, with local paths made absolute and the files it reads by
name (labels manifests, recipe and accelerate files) by content. ``rounds`` is left out on
purpose: a finished run may be continued for more rounds into the same folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from evoq_data.core.errors import EvoqError
from evoq_data.core.ids import file_sha256

SELF_ENGINES = ("transformers", "vllm")  # engines that load a checkpoint trained in the run
BOOTSTRAP_ENGINES = ("transformers", "vllm", "openai", "piqe")
INIT_FROM = ("previous", "base")
HUB_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Engine arguments that are command-line options of the generating commands, not --engine-arg.
OPTION_ARGS = {"base_url": "--base-url", "concurrency": "--concurrency",
               "model_revision": "--model-revision"}


@dataclass
class EvolveSettings:
    """Everything ``evoq-train evolve`` takes (the command line's options, by field name)."""

    pool: str | None = None
    model: str | None = None
    rounds: int = 2
    run_dir: str | None = None
    repo_id: str | None = None
    local_dir: str | None = None
    pairs_per_round: int = 20000
    votes_per_pair: int = 32
    engine: str = "transformers"
    engine_args: list[str] = field(default_factory=list)
    max_tokens: int = 1024
    vote_args: list[str] = field(default_factory=list)
    train_config: str = "qwen2.5-vl-7b-8xa100"
    train_args: list[str] = field(default_factory=list)
    accelerate_config: str | None = None
    evals: list[str] = field(default_factory=list)
    eval_base: bool = True
    score_samples: int = 8
    bootstrap_engine: str | None = None
    bootstrap_model: str | None = None
    bootstrap_args: list[str] = field(default_factory=list)
    synthetic_pairs: int = 0
    init_from: str = "previous"
    seed: int = 0

    # --- building --------------------------------------------------------------------

    @classmethod
    def build(cls, config: str | Path | None, given: dict) -> EvolveSettings:
        """Defaults, then the YAML file ``config``, then ``given`` (the command line's
        options that were set: None means not given)."""
        values: dict = {}
        if config is not None:
            values.update(read_config_file(Path(config)))
        values.update({k: v for k, v in given.items() if v is not None and v != []})
        return cls(**values)

    # --- checks ----------------------------------------------------------------------

    def validate(self) -> None:
        """Every check that needs no engine, model or network: one line per problem."""
        if not self.run_dir:
            raise EvoqError("--run-dir is required (the folder of the run: state, logs, rounds)")
        run = Path(self.run_dir).expanduser()
        if run.exists() and not run.is_dir():
            raise EvoqError(f"--run-dir {run} is an existing file; give a folder")
        if not self.pool:
            raise EvoqError("--pool is required (an image folder or a Hugging Face dataset)")
        local_or_hub(self.pool, "--pool", want="dir_or_file")
        if not self.model:
            raise EvoqError("--model is required (the base model: Hub id or checkpoint folder)")
        local_or_hub(self.model, "--model", want="dir")
        for name, value, low in (("--rounds", self.rounds, 1),
                                 ("--pairs-per-round", self.pairs_per_round, 1),
                                 ("--votes-per-pair", self.votes_per_pair, 1),
                                 ("--max-tokens", self.max_tokens, 1),
                                 ("--score-samples", self.score_samples, 1),
                                 ("--synthetic-pairs", self.synthetic_pairs, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise EvoqError(f"{name} must be an integer of at least {low}, got {value!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise EvoqError(f"--seed must be a non-negative integer, got {self.seed!r}")
        if self.engine not in SELF_ENGINES:
            hint = (" (an OpenAI-compatible endpoint cannot serve the checkpoints this run "
                    "trains; use it as --bootstrap-engine)" if self.engine == "openai" else "")
            raise EvoqError(f"--engine must be one of {', '.join(SELF_ENGINES)}, got "
                            f"{self.engine!r}{hint}")
        parse_key_values(self.engine_args, "--engine-arg")
        parse_key_values(self.bootstrap_args, "--bootstrap-arg")
        if self.bootstrap_engine is not None:
            if self.bootstrap_engine not in BOOTSTRAP_ENGINES:
                raise EvoqError(f"--bootstrap-engine must be one of "
                                f"{', '.join(BOOTSTRAP_ENGINES)}, got {self.bootstrap_engine!r}")
            if self.bootstrap_engine == "piqe" and self.bootstrap_model:
                raise EvoqError("--bootstrap-engine piqe takes no --bootstrap-model "
                                "(a classical metric with no weights)")
            if self.bootstrap_engine == "openai" and "base_url" not in parse_key_values(
                    self.bootstrap_args, "--bootstrap-arg"):
                raise EvoqError("--bootstrap-engine openai needs --bootstrap-arg "
                                "base_url=http://HOST:PORT/v1")
            if self.bootstrap_model and self.bootstrap_engine in SELF_ENGINES:
                local_or_hub(self.bootstrap_model, "--bootstrap-model", want="dir")
        elif self.bootstrap_model or self.bootstrap_args:
            raise EvoqError("--bootstrap-model and --bootstrap-arg need --bootstrap-engine")
        if self.init_from not in INIT_FROM:
            raise EvoqError(f"--init-from must be one of {', '.join(INIT_FROM)}, got "
                            f"{self.init_from!r}")
        if self.repo_id is not None:
            from evoq_data.core.names import REPO_ID_RE

            if not REPO_ID_RE.fullmatch(self.repo_id):
                raise EvoqError(f"malformed --repo-id {self.repo_id!r}: expected OWNER/NAME")
        if self.local_dir is not None and Path(self.local_dir).expanduser().is_file():
            raise EvoqError(f"--local-dir {self.local_dir} is an existing file; give a folder")
        from evoq_train.settings import resolve_recipe

        resolve_recipe(self.train_config)  # one line naming the shipped recipes when unknown
        parse_train_args(self.train_args)
        for arg in self.vote_args:
            if not str(arg).startswith("--"):
                raise EvoqError(f"--vote-arg {arg!r}: pass one option of `evoq-data vote`, "
                                "e.g. --vote-arg=--chunk-pairs=256")
        if self.accelerate_config is not None:
            accelerate_file(self.accelerate_config)
        names = [check_eval(spec)[0] for spec in self.evals]
        if len(set(names)) != len(names):
            raise EvoqError(f"--eval names must be distinct, got {', '.join(names)}")

    # --- identity --------------------------------------------------------------------

    def identity(self) -> dict:
        """The settings that decide what the run makes, comparable across reruns."""
        doc = dataclasses.asdict(self)
        for key in ("rounds", "run_dir"):
            doc.pop(key)
        doc["pool"] = _identity_path(self.pool)
        doc["model"] = _identity_path(self.model)
        if self.bootstrap_model and self.bootstrap_engine in SELF_ENGINES:
            doc["bootstrap_model"] = _identity_path(self.bootstrap_model)
        if self.local_dir:
            doc["local_dir"] = str(Path(self.local_dir).expanduser().resolve())
        recipe = Path(self.train_config).expanduser()
        doc["train_config"] = ({"file": str(recipe.resolve()), "sha256": file_sha256(recipe)}
                               if recipe.is_file() else self.train_config)
        if self.accelerate_config:
            path = accelerate_file(self.accelerate_config)
            doc["accelerate_config"] = {"file": str(path), "sha256": file_sha256(path)}
        doc["evals"] = [{"name": name, "labels": str(path.resolve()),
                         "sha256": file_sha256(path)}
                        for name, path in (check_eval(spec, deep=False) for spec in self.evals)]
        return doc


def fingerprint(identity: dict) -> str:
    return "sha256:" + hashlib.sha256(
        json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def changed_fields(old: dict, new: dict) -> list[str]:
    """The top-level settings that differ between two identities, named as options."""
    keys = sorted(set(old) | set(new))
    return [k for k in keys if old.get(k) != new.get(k)]


def option_name(field_name: str) -> str:
    """The command-line option of a settings field (engine_args -> --engine-arg)."""
    special = {"evals": "--eval", "engine_args": "--engine-arg", "vote_args": "--vote-arg",
               "train_args": "--train-arg", "bootstrap_args": "--bootstrap-arg",
               "eval_base": "--eval-base/--no-eval-base"}
    return special.get(field_name, "--" + field_name.replace("_", "-"))


# --- helpers -----------------------------------------------------------------------------

def read_config_file(path: Path) -> dict:
    """A YAML mapping of settings; keys are field or option names (dashes or underscores)."""
    import yaml

    if not path.is_file():
        raise EvoqError(f"--config {path} not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise EvoqError(f"--config {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise EvoqError(f"--config {path} must be a mapping of settings (pool: ..., model: ...)")
    names = {f.name for f in dataclasses.fields(EvolveSettings)}
    aliases = {"eval": "evals", "engine_arg": "engine_args", "vote_arg": "vote_args",
               "train_arg": "train_args", "bootstrap_arg": "bootstrap_args"}
    out = {}
    for key, value in data.items():
        name = str(key).lstrip("-").replace("-", "_")
        name = aliases.get(name, name)
        if name not in names:
            raise EvoqError(f"--config {path}: unknown setting {key!r} (known: "
                            f"{', '.join(sorted(names))})")
        if name.endswith("s") and name in aliases.values() and isinstance(value, str):
            value = [value]
        if name.endswith("_args") or name == "evals":
            if isinstance(value, dict):
                value = [f"{k}={v}" for k, v in value.items()]
            value = [str(v) for v in (value or [])]
        out[name] = value
    return out


def local_or_hub(value: str, option: str, *, want: str) -> tuple[str, Path | None]:
    """("local", path) for an existing path, ("hub", None) for a Hub id; else one line."""
    path = Path(value).expanduser()
    if path.exists():
        if want == "dir" and not path.is_dir():
            raise EvoqError(f"{option} {value} is a file; give a checkpoint folder or a Hub id")
        return "local", path.resolve()
    looks_local = value.startswith((".", "/", "~"))
    if not looks_local and HUB_ID_RE.fullmatch(value) and "/" in value:
        return "hub", None
    raise EvoqError(f"{option} {value} not found: no such file or folder (nor a Hub id "
                    "OWNER/NAME)")


def _identity_path(value: str) -> str:
    kind, path = local_or_hub(value, "path", want="any")
    return str(path) if kind == "local" else value


def parse_key_values(items: list[str], option: str) -> dict:
    out = {}
    for item in items or []:
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise EvoqError(f"{option} {item!r}: expected KEY=VALUE")
        out[key.strip()] = value
    return out


def parse_train_args(items: list[str]) -> list[str]:
    """``KEY=VALUE`` training settings -> ``--KEY VALUE`` for ``evoq-train grpo``."""
    argv = []
    for key, value in parse_key_values(items, "--train-arg").items():
        name = key.lstrip("-").replace("-", "_")
        if name in ("output_dir", "dataset", "dataset_revision", "model",
                    "resume_from_checkpoint"):
            raise EvoqError(f"--train-arg {key}: evolve sets {name} itself for every round")
        argv += [f"--{name}", value]
    return argv


def accelerate_file(value: str) -> Path:
    """An accelerate config file, or the name of a shipped one (accelerate/zero3)."""
    path = Path(value).expanduser()
    if path.is_file():
        return path.resolve()
    from evoq_train.settings import recipes_dir

    shipped = recipes_dir() / f"{value.removesuffix('.yaml')}.yaml"
    if shipped.is_file() and value.startswith("accelerate/"):
        return shipped
    raise EvoqError(f"--accelerate-config {value} not found (a file, or a shipped name such as "
                    "accelerate/zero3)")


def check_eval(spec: str, *, deep: bool = True) -> tuple[str, Path]:
    """``NAME=LABELS`` -> (name, labels file), checked: a CSV/TSV/Parquet manifest with a MOS
    column and a path column whose files exist (evolve scores exactly those images)."""
    name, sep, source = str(spec).partition("=")
    if not sep:
        name, source = Path(spec).stem, spec
    if not NAME_RE.fullmatch(name):
        raise EvoqError(f"--eval {spec!r}: the name must be letters, digits, '.', '_' or '-'")
    path = Path(source).expanduser()
    if path.suffix.lower() not in (".csv", ".tsv", ".parquet"):
        raise EvoqError(f"--eval {spec}: give a .csv, .tsv or .parquet labels manifest")
    if not path.is_file():
        raise EvoqError(f"--eval {name}: labels file not found: {path}")
    if deep:
        eval_images(path)
    return name, path


def eval_images(path: Path) -> list[Path]:
    """The image files a labels manifest names (relative paths from the manifest's folder);
    one line when it lacks the MOS or a path column, or names a missing file."""
    from evoq_data.evaluate.metrics import PATH_COLUMNS, _read_table

    table = _read_table(path)
    by_lower = {c.lower(): c for c in table.column_names}
    if "mos" not in by_lower:
        raise EvoqError(f"--eval labels {path} have no 'mos' column (columns: "
                        f"{', '.join(table.column_names)})")
    col = next((by_lower[c] for c in PATH_COLUMNS if c in by_lower), None)
    if col is None:
        raise EvoqError(f"--eval labels {path} need a path column ({', '.join(PATH_COLUMNS)}) "
                        "naming the images to score; columns: "
                        f"{', '.join(table.column_names)}")
    files = []
    for value in table.column(col).to_pylist():
        f = Path(str(value)).expanduser()
        files.append(f if f.is_absolute() else path.parent / f)
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise EvoqError(f"{len(missing)} image(s) named in --eval labels {path} do not exist: "
                        f"{', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
    if not files:
        raise EvoqError(f"--eval labels {path} have no rows")
    return files
