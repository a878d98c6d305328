"""The run folder of ``evoq-train evolve``: every path and step name of a run, in one place.

Paths are relative to RUN (the children's working directory), as strings, so that what a
step records names nothing of the machine's layout::

    state.json lineage.json report.md report.png .evolve.lock     the run's record
    logs/round-<r>-<step>.log                  each step's stderr, then its stdout
    eval-images/<name>/<n>-<file>              links to the images of each --eval manifest
    round-0/eval/                              the base model's scores and metrics (--eval)
    round-<r>/pairs.parquet                    the round's pairs (+ .manifest.json)
    round-<r>/random-pairs.parquet             with --synthetic-pairs: the random part
    round-<r>/synthetic/{refs,distorted,pairs.parquet}   with --synthetic-pairs: the synthetic part
    round-<r>/voted-by.json                    who voted the round (the aggregate's --lineage)
    round-<r>/label-accuracy/                  with --pool-labels: accuracy.{md,json,png}
    round-<r>/votes/ prefs/ model/ eval/       VOTES_DIR, PREFS_DIR, the trained model, eval
    datasets/round-<r>/                        the published version (default --local-dir)

A step is named ``round-<r>/<kind>`` (round 0: what comes before round 1) and its log is
``logs/round-<r>-<kind>.log``; a dataset version is named ``round-<r>``. Nothing outside this
module formats or parses these names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

STATE = "state.json"
LINEAGE = "lineage.json"
REPORT_MD = "report.md"
REPORT_PNG = "report.png"
LOCK = ".evolve.lock"
LOGS = "logs"
EVAL_IMAGES = "eval-images"
DATASETS = "datasets"

_PREFIX = "round-"
_MODEL_RE = re.compile(r"round-([0-9]+)/model")


def manifest_of(path: str) -> str:
    """The manifest written beside a Parquet file of the run (``x.parquet`` ->
    ``x.manifest.json``), by the one rule of :func:`evoq_data.core.manifests.manifest_path`
    (the run's Parquet outputs are files, never folders)."""
    from evoq_data.core.manifests import manifest_path

    return manifest_path(path).as_posix()


def summary_of(path: str) -> str:
    """The per-image summary beside a scores file (``x.parquet`` -> ``x.summary.parquet``)."""
    return path.removesuffix(".parquet") + ".summary.parquet"


@dataclass(frozen=True)
class RoundLayout:
    """The paths and step names of round ``r`` (relative to RUN)."""

    r: int

    @property
    def dir(self) -> str:
        return f"{_PREFIX}{self.r}"

    @property
    def version(self) -> str:
        """The name of the dataset version the round publishes."""
        return f"{_PREFIX}{self.r}"

    def step(self, kind: str) -> str:
        return f"{self.dir}/{kind}"

    def log(self, kind: str) -> str:
        return f"{LOGS}/{self.dir}-{kind}.log"

    @property
    def pairs(self) -> str:
        return f"{self.dir}/pairs.parquet"

    @property
    def random_pairs(self) -> str:
        """The random part of a round that also has synthetic pairs."""
        return f"{self.dir}/random-pairs.parquet"

    @property
    def references(self) -> str:
        return f"{self.dir}/synthetic/refs"

    @property
    def distorted(self) -> str:
        return f"{self.dir}/synthetic/distorted"

    @property
    def synthetic_pairs(self) -> str:
        return f"{self.dir}/synthetic/pairs.parquet"

    @property
    def voted_by(self) -> str:
        return f"{self.dir}/voted-by.json"

    @property
    def votes(self) -> str:
        return f"{self.dir}/votes"

    @property
    def vote_manifest(self) -> str:
        return f"{self.votes}/manifest.json"

    @property
    def prefs(self) -> str:
        return f"{self.dir}/prefs"

    @property
    def prefs_manifest(self) -> str:
        return f"{self.prefs}/manifest.json"

    @property
    def prefs_stats(self) -> str:
        return f"{self.prefs}/stats.json"

    @property
    def label_accuracy(self) -> str:
        """With --pool-labels: the folder of ``evoq-data eval --prefs`` on the round's prefs."""
        return f"{self.dir}/label-accuracy"

    @property
    def label_accuracy_files(self) -> tuple[str, str, str]:
        """accuracy.md, accuracy.json, accuracy.png of ``evoq-data eval --prefs``."""
        return tuple(f"{self.label_accuracy}/accuracy.{ext}" for ext in ("md", "json", "png"))

    @property
    def model(self) -> str:
        return f"{self.dir}/model"

    @property
    def eval(self) -> str:
        return f"{self.dir}/eval"

    @property
    def scores(self) -> str:
        return f"{self.eval}/scores.parquet"

    @property
    def metrics(self) -> tuple[str, str, str]:
        """metrics.md, metrics.json, scatter.png of ``evoq-data eval``."""
        return (f"{self.eval}/metrics.md", f"{self.eval}/metrics.json",
                f"{self.eval}/scatter.png")

    @property
    def dataset(self) -> str:
        """The default local folder of the round's version (``datasets/round-r``)."""
        return f"{DATASETS}/{self.version}"


class RunLayout:
    """The run folder RUN: its record files, and each round's layout."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunLayout({str(self.root)!r})"

    def round(self, r: int) -> RoundLayout:
        return RoundLayout(r)

    def path(self, rel: str) -> Path:
        """A path of the layout (or any path relative to RUN) on this machine."""
        p = Path(rel)
        return p if p.is_absolute() else self.root / p

    @property
    def state(self) -> Path:
        return self.root / STATE

    @property
    def lineage(self) -> Path:
        return self.root / LINEAGE

    @property
    def report_md(self) -> Path:
        return self.root / REPORT_MD

    @property
    def report_png(self) -> Path:
        return self.root / REPORT_PNG

    @property
    def lock(self) -> Path:
        return self.root / LOCK

    @staticmethod
    def eval_images(name: str | None = None) -> str:
        return EVAL_IMAGES if name is None else f"{EVAL_IMAGES}/{name}"

    @staticmethod
    def model_round(path: str) -> int | None:
        """The round whose model ``path`` names (``round-1/model`` -> 1), else None."""
        m = _MODEL_RE.fullmatch(path)
        return int(m.group(1)) if m else None

    @staticmethod
    def local_dataset(local_dir: str, r: int) -> str:
        """Version round-r inside a user's --local-dir (a folder holds one version)."""
        return f"{local_dir.rstrip('/')}/{RoundLayout(r).version}"
