"""What every part of an evolve run reads: the settings, the user's paths as the children see
them (:class:`Sources`), the run's layout and state, and who votes and trains each round.

:meth:`Sources.resolve` is the one place that looks at the user's paths on disk; everything
built from a :class:`RunContext` (the steps' command lines, the lineage, the report) is a
function of its fields.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .config import EvolveSettings, accelerate_file, check_eval, local_or_hub
from .layout import RunLayout
from .state import RunState


def _relative(value: str | Path, run: Path) -> str:
    """A user path as the children see it (relative to RUN, their working directory)."""
    return os.path.relpath(Path(value).expanduser().resolve(), run)


def _source(value: str, option: str, run: Path) -> str:
    """A local path relative to RUN, or a Hub id as given."""
    kind, path = local_or_hub(value, option, want="any")
    return _relative(path, run) if kind == "local" else value


@dataclass(frozen=True)
class Sources:
    """Every path the user gave, relative to RUN (or a Hub id or shipped name as given)."""

    pool: str
    base_model: str
    bootstrap_model: str | None = None
    recipe: str = "qwen2.5-vl-7b-8xa100"
    accelerate_config: str | None = None
    evals: tuple[tuple[str, str], ...] = ()   # (name, labels manifest)
    local_dir: str | None = None
    pool_labels: str | None = None

    @classmethod
    def resolve(cls, settings: EvolveSettings, run: Path) -> Sources:
        s = settings
        bootstrap = s.bootstrap_model
        if bootstrap and s.bootstrap_engine != "openai":
            bootstrap = _source(bootstrap, "--bootstrap-model", run)
        recipe = Path(s.train_config).expanduser()
        return cls(
            pool=_source(s.pool, "--pool", run),
            base_model=_source(s.model, "--model", run),
            bootstrap_model=bootstrap,
            recipe=_relative(recipe, run) if recipe.is_file() else s.train_config,
            accelerate_config=(_relative(accelerate_file(s.accelerate_config), run)
                               if s.accelerate_config else None),
            evals=tuple((name, _relative(path, run)) for name, path in
                        (check_eval(spec, deep=False) for spec in s.evals)),
            local_dir=_relative(s.local_dir, run) if s.local_dir else None,
            pool_labels=_relative(s.pool_labels, run) if s.pool_labels else None,
        )


@dataclass(frozen=True)
class ModelRef:
    """A model a round trains from or votes with: its path (or Hub id) as the children name
    it, its role in the run, and the round that trained it (None: the base model)."""

    path: str
    role: str
    round: int | None = None


@dataclass(frozen=True)
class Voter:
    """The judge of a round: engine, model (None: the engine's own), engine args, role."""

    engine: str
    model: str | None
    args: tuple[str, ...]
    role: str


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "run"


@dataclass(frozen=True)
class RunContext:
    """One run: settings, sources, layout and (while it runs) its state."""

    settings: EvolveSettings
    sources: Sources
    layout: RunLayout
    state: RunState | None = None

    @property
    def synthetic(self) -> bool:
        return self.settings.synthetic_pairs > 0

    def mixes(self, r: int) -> bool:
        """Round r has synthetic pairs beside its random ones."""
        return self.synthetic and r >= 2

    def random_pairs(self, r: int) -> str:
        rl = self.layout.round(r)
        return rl.random_pairs if self.mixes(r) else rl.pairs

    @property
    def hub(self) -> bool:
        return self.settings.repo_id is not None and self.settings.local_dir is None

    @property
    def repo_id(self) -> str:
        """The dataset repository named in the cards (for a local-only run: local/<RUN name>)."""
        return self.settings.repo_id or f"local/{_slug(self.layout.root.name)}"

    def dataset_dir(self, r: int) -> str | None:
        """Where version round-r is written (None when it goes to the Hub); a local folder
        holds one version, so each version gets its own subfolder."""
        if self.hub:
            return None
        if self.sources.local_dir is None:
            return self.layout.round(r).dataset
        return self.layout.local_dataset(self.sources.local_dir, r)

    def parent(self, r: int) -> ModelRef:
        """The model round r trains from."""
        if r == 1 or self.settings.init_from == "base":
            return ModelRef(self.sources.base_model, "base model")
        return ModelRef(self.layout.round(r - 1).model, f"model of round {r - 1}", r - 1)

    def voter(self, r: int) -> Voter:
        """The judge that votes round r."""
        s = self.settings
        if r == 1 and s.bootstrap_engine:
            return Voter(s.bootstrap_engine, self.sources.bootstrap_model,
                         tuple(s.bootstrap_args), "bootstrap judge")
        if r == 1:
            return Voter(s.engine, self.sources.base_model, tuple(s.engine_args), "base model")
        return Voter(s.engine, self.layout.round(r - 1).model, tuple(s.engine_args),
                     f"model of round {r - 1}")

    @property
    def rounds_held(self) -> int:
        """The rounds to show: those asked for, and any later round the run already holds
        (a run of 3 rounds rerun with --rounds 2 keeps its round 3)."""
        last = self.state.last_round() if self.state is not None else 0
        return max(self.settings.rounds, last)

    def require_state(self) -> RunState:
        assert self.state is not None, "a run's state is opened before its steps run"
        return self.state
