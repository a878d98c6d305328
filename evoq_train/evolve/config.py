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
from dataclasses import dataclass, field
from pathlib import Path

from evoq_data.cli.fields import check_fields, option_label, settings_from_mapping
from evoq_data.cli.options import GenerationOptions, generation_field
from evoq_data.core.errors import EvoqError
from evoq_data.core.ids import file_sha256
from evoq_data.core.names import HUB_ID_RE, LABEL_RE, check_repo_id
from evoq_train.recipes import read_yaml_mapping, resolve_recipe

SELF_ENGINES = ("transformers", "vllm")  # engines that load a checkpoint trained in the run
BOOTSTRAP_ENGINES = ("transformers", "vllm", "openai", "piqe")
INIT_FROM = ("previous", "base")
# Engine arguments that are command-line options of the generating commands, not --engine-arg.
OPTION_ARGS = {name: option_label(GenerationOptions, name)
               for name in ("base_url", "concurrency", "model_revision")}
# Settings that do not decide what the run makes (left out of its fingerprint).
NOT_IDENTITY = ("rounds", "run_dir", "quiet")


@dataclass
class EvolveSettings:
    """Everything ``evoq-train evolve`` takes, each setting declared once: the field is the
    command-line option (``--`` + its name with dashes, or ``flag``), the ``--config`` key and
    the help; ``min`` and ``choices`` are checked by :meth:`validate`."""

    pool: str | None = field(default=None, metadata={
        "help": "Image pool: a folder (recursive) or a HF dataset; fresh random pairs are "
                "drawn from it each round."})
    model: str | None = field(default=None, metadata={
        "help": "Base model BASE: Hub id or checkpoint folder (Qwen2.5-VL family)."})
    rounds: int = field(default=2, metadata={
        "min": 1, "help": "T: rounds of vote -> aggregate -> publish -> GRPO (paper: 2). May "
                          "be raised later to continue a run."})
    run_dir: str | None = field(default=None, metadata={
        "help": "RUN: state.json, lineage.json, report, logs and each round's files."})
    repo_id: str | None = field(default=None, metadata={
        "help": "Publish round r as version round-r of this Hub dataset OWNER/NAME."})
    local_dir: str | None = field(default=None, metadata={
        "help": "Write version round-r to DIR/round-r instead (default without --repo-id: "
                "RUN/datasets)."})
    pairs_per_round: int = field(default=20000, metadata={
        "min": 1, "help": "Random pairs per round (paper: 20000)."})
    votes_per_pair: int = field(default=32, metadata={
        "min": 1, "aliases": ["-k"], "help": "K votes per pair (paper: 32)."})
    engine: str = field(default="transformers", metadata={
        "choices": SELF_ENGINES,
        "hint": {"openai": " (an OpenAI-compatible endpoint cannot serve the checkpoints this "
                           "run trains; use it as --bootstrap-engine)"},
        "help": "Engine the run's models vote and score with: vllm (GPUs) or transformers."})
    engine_args: list[str] = generation_field("engine_arg")
    max_tokens: int = generation_field("max_tokens", min=1)
    vote_args: list[str] = field(default_factory=list, metadata={
        "flag": "--vote-arg",
        "help": "An extra `evoq-data vote` option for every round (repeatable), e.g. "
                "--vote-arg=--chunk-pairs=256."})
    aggregate_args: list[str] = field(default_factory=list, metadata={
        "flag": "--aggregate-arg",
        "help": "An extra `evoq-data aggregate` option for every round (repeatable), e.g. "
                "--aggregate-arg=--min-agreement=0.6."})
    train_config: str = field(default="qwen2.5-vl-7b-8xa100", metadata={
        "help": "GRPO recipe: shipped name or YAML file."})
    train_args: list[str] = field(default_factory=list, metadata={
        "flag": "--train-arg",
        "help": "KEY=VALUE training setting overriding the recipe (repeatable), e.g. "
                "max_steps=100."})
    accelerate_config: str | None = field(default=None, metadata={
        "help": "Run GRPO under `accelerate launch --config_file FILE` (a file or a shipped "
                "name such as accelerate/zero3); default: one plain process."})
    evals: list[str] = field(default_factory=list, metadata={
        "flag": "--eval",
        "help": "NAME=LABELS (repeatable): a CSV/TSV/Parquet manifest with mos and a path "
                "column; each round's model (and the base model) is scored on its images and "
                "evaluated."})
    pool_labels: str | None = field(default=None, metadata={
        "help": "Labels of the pool's images, to measure (never to train on) each round's "
                "pseudo-label accuracy: a CSV/TSV/Parquet manifest with mos and a path or "
                "image_id column, or a distortions.parquet of `evoq-data distort` (a known "
                "order)."})
    eval_base: bool = field(default=True, metadata={
        "flag": "--eval-base/--no-eval-base",
        "help": "Also evaluate the base model as round 0 (with --eval)."})
    score_samples: int = field(default=8, metadata={
        "min": 1, "help": "K score samples per eval image."})
    bootstrap_engine: str | None = field(default=None, metadata={
        "choices": BOOTSTRAP_ENGINES,
        "help": "Who votes round 1: piqe, openai, transformers or vllm (default: BASE with "
                "--engine)."})
    bootstrap_model: str | None = field(default=None, metadata={
        "help": "The bootstrap judge's model (openai: the served model's name)."})
    bootstrap_args: list[str] = field(default_factory=list, metadata={
        "flag": "--bootstrap-arg",
        "help": "KEY=VALUE for the bootstrap engine (repeatable), e.g. "
                "base_url=http://host:8000/v1."})
    synthetic_pairs: int = field(default=0, metadata={
        "min": 0, "help": "From round 2 on, add N pairs of distorted variants of pool images "
                          "(known order), as in the paper's round 2."})
    init_from: str = field(default="previous", metadata={
        "choices": INIT_FROM,
        "help": "previous: round r trains from the model of round r-1; base: from BASE."})
    seed: int = field(default=0, metadata={
        "min": 0, "help": "Run seed; each round's pair, vote and synthetic seeds derive "
                          "from it."})
    quiet: bool = field(default=False, metadata={
        "aliases": ["-q"], "help": "No progress bars (also none from the libraries evoq "
                                   "drives)."})

    # --- building --------------------------------------------------------------------

    @classmethod
    def build(cls, config: str | Path | None, given: dict) -> EvolveSettings:
        """Defaults, then the YAML file ``config``, then ``given`` (the command line's
        options that were set, by field name: None means not given)."""
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
        check_fields(self)  # the fields' own min and choices
        parse_key_values(self.engine_args, "--engine-arg")
        parse_key_values(self.bootstrap_args, "--bootstrap-arg")
        if self.bootstrap_engine is not None:
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
        if self.repo_id is not None:
            check_repo_id(self.repo_id, "--repo-id")
        if self.local_dir is not None and Path(self.local_dir).expanduser().is_file():
            raise EvoqError(f"--local-dir {self.local_dir} is an existing file; give a folder")
        # one line naming the shipped recipes when unknown
        resolve_recipe(self.train_config, option="--train-config")
        parse_train_args(self.train_args)
        for arg in self.vote_args:
            if not str(arg).startswith("--"):
                raise EvoqError(f"--vote-arg {arg!r}: pass one option of `evoq-data vote`, "
                                "e.g. --vote-arg=--chunk-pairs=256")
        for arg in self.aggregate_args:
            if not str(arg).startswith("--"):
                raise EvoqError(f"--aggregate-arg {arg!r}: pass one option of `evoq-data "
                                "aggregate`, e.g. --aggregate-arg=--min-agreement=0.6")
        if self.accelerate_config is not None:
            accelerate_file(self.accelerate_config)
        if self.pool_labels is not None:
            check_pool_labels_file(self.pool_labels)
        names = [check_eval(spec)[0] for spec in self.evals]
        if len(set(names)) != len(names):
            raise EvoqError(f"--eval names must be distinct, got {', '.join(names)}")

    # --- identity --------------------------------------------------------------------

    def identity(self) -> dict:
        """The settings that decide what the run makes, comparable across reruns."""
        doc = dataclasses.asdict(self)
        for key in NOT_IDENTITY:
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
        if self.pool_labels:
            path = Path(self.pool_labels).expanduser()
            doc["pool_labels"] = {"file": str(path.resolve()), "sha256": file_sha256(path)}
        else:
            doc.pop("pool_labels")  # a run started before the option keeps its fingerprint
        if not self.aggregate_args:
            doc.pop("aggregate_args")  # likewise
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
    return option_label(EvolveSettings, field_name)


def read_config_file(path: Path) -> dict:
    """The settings of a ``--config`` YAML file by field name: keys are field or option names
    (dashes or underscores), values of the field's type (one line naming the key otherwise)."""
    where = f"--config {path}"
    return settings_from_mapping(EvolveSettings, read_yaml_mapping(path, where), where)


# --- helpers -----------------------------------------------------------------------------

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
    return resolve_recipe(value, scope="accelerate", label="accelerate config",
                          option="--accelerate-config").resolve()


def check_eval(spec: str, *, deep: bool = True) -> tuple[str, Path]:
    """``NAME=LABELS`` -> (name, labels file), checked: a CSV/TSV/Parquet manifest with a MOS
    column and a path column whose files exist (evolve scores exactly those images)."""
    name, sep, source = str(spec).partition("=")
    if not sep:
        name, source = Path(spec).stem, spec
    if not LABEL_RE.fullmatch(name):
        raise EvoqError(f"--eval {spec!r}: the name must be letters, digits, '.', '_' or '-'")
    path = Path(source).expanduser()
    if path.suffix.lower() not in (".csv", ".tsv", ".parquet"):
        raise EvoqError(f"--eval {spec}: give a .csv, .tsv or .parquet labels manifest")
    if not path.is_file():
        raise EvoqError(f"--eval {name}: labels file not found: {path}")
    if deep:
        eval_images(path)
    return name, path


def check_pool_labels_file(value: str) -> Path:
    """The --pool-labels file: an existing CSV/TSV/Parquet file (its rows are checked against
    the pool in :func:`evoq_train.evolve.checks.check_pool_labels`)."""
    path = Path(value).expanduser()
    if path.suffix.lower() not in (".csv", ".tsv", ".parquet"):
        raise EvoqError(f"--pool-labels {value}: give a .csv, .tsv or .parquet labels manifest "
                        "(or a distortions.parquet)")
    if not path.is_file():
        raise EvoqError(f"--pool-labels {value}: labels file not found")
    return path


def eval_images(path: Path) -> list[Path]:
    """The image files a labels manifest names (relative paths from the manifest's folder);
    one line when it lacks the MOS or a path column, or names a missing file."""
    from evoq_data.evaluate.labels import PATH_COLUMNS, read_label_table

    table = read_label_table(path)
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
