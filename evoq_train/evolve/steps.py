"""The steps of an evolve run, one builder per step, and the run's folder layout.

Every heavy step is one command a user could type (``evoq-data pairs|vote|aggregate|push|
score|eval|distort``, ``evoq-train grpo``, under ``accelerate launch`` when an accelerate
config is given), run as a child process with the run folder as its working directory, so
every path a step records is relative to RUN (nothing of the making machine's layout goes into
a published card) and GPU memory is free between voting and training. Two small steps run
inside evolve itself: choosing the references for synthetic pairs, and mixing the random and
synthetic pairs of a round into one pairs file.

Layout (paths relative to RUN)::

    state.json lineage.json report.md report.png     the run's record (state.py, lineage.py, report.py)
    logs/round-<r>-<step>.log                         each step's stderr, then its stdout
    eval-images/<name>/<n>-<file>                     links to the images of each --eval manifest
    round-0/eval/                                     the base model's scores and metrics (--eval)
    round-<r>/pairs.parquet                           the round's pairs (+ .manifest.json)
    round-<r>/random-pairs.parquet                    with --synthetic-pairs: the random part
    round-<r>/synthetic/{refs,distorted,pairs.parquet} with --synthetic-pairs: the synthetic part
    round-<r>/votes/ prefs/ model/ eval/              VOTES_DIR, PREFS_DIR, the trained model, eval
    datasets/round-<r>/                               the published version (default --local-dir)
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from evoq_data.core.errors import EvoqError
from evoq_data.core.ids import SEED_LIMIT, digest_u64
from evoq_data.core.io import write_json_atomic

from .config import (
    OPTION_ARGS,
    EvolveSettings,
    accelerate_file,
    check_eval,
    eval_images,
    local_or_hub,
    parse_key_values,
    parse_train_args,
)
from .state import RunState

SYNTHETIC_PAIRS_PER_REFERENCE = 75  # 5 distortion types x C(6, 2) pairs of one reference


@dataclass
class Step:
    """One step of the run. ``command`` builds the child's argv when the step runs (None: the
    work is done in ``before``); ``after`` reads what it wrote and returns summary fields."""

    round: int
    kind: str
    outputs: list[str]
    inputs: list[str] = field(default_factory=list)
    command: Callable[[], list[str] | None] | None = None
    before: Callable[[], None] | None = None
    after: Callable[[dict], dict] | None = None
    clean: bool = True          # remove the outputs before a new attempt (False: it resumes)
    exclude: tuple[str, ...] = ()
    json_stdout: bool = True

    @property
    def name(self) -> str:
        return f"round-{self.round}/{self.kind}"

    @property
    def log(self) -> str:
        return f"logs/round-{self.round}-{self.kind}.log"


def derived_seed(seed: int, what: str, round_: int) -> int:
    """The seed of one choice of one round, from the run seed (never from run order)."""
    return digest_u64("evoq-evolve", seed, what, round_) % SEED_LIMIT


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "run"


class Context:
    """The settings, the run folder and its state, and the paths every step uses."""

    def __init__(self, settings: EvolveSettings, run: Path, state: RunState) -> None:
        self.s = settings
        self.run = run
        self.state = state

    # --- paths ---------------------------------------------------------------------------

    def arg(self, value: str | Path) -> str:
        """A user path as the children see it (relative to RUN, their working directory)."""
        return os.path.relpath(Path(value).expanduser().resolve(), self.run)

    def source(self, value: str, option: str) -> str:
        """A local path relative to RUN, or a Hub id as given."""
        kind, path = local_or_hub(value, option, want="any")
        return self.arg(path) if kind == "local" else value

    @property
    def base_model(self) -> str:
        return self.source(self.s.model, "--model")

    @property
    def synthetic(self) -> bool:
        return self.s.synthetic_pairs > 0

    @staticmethod
    def rdir(r: int) -> str:
        return f"round-{r}"

    def pairs(self, r: int) -> str:
        return f"round-{r}/pairs.parquet"

    def random_pairs(self, r: int) -> str:
        return f"round-{r}/random-pairs.parquet" if self.mixes(r) else self.pairs(r)

    def mixes(self, r: int) -> bool:
        return self.synthetic and r >= 2

    def votes(self, r: int) -> str:
        return f"round-{r}/votes"

    def prefs(self, r: int) -> str:
        return f"round-{r}/prefs"

    def model(self, r: int) -> str:
        return f"round-{r}/model"

    def scores(self, r: int) -> str:
        return f"round-{r}/eval/scores.parquet"

    @property
    def hub(self) -> bool:
        return self.s.repo_id is not None and self.s.local_dir is None

    @property
    def repo_id(self) -> str:
        """The dataset repository named in the cards (for a local-only run: local/<RUN name>)."""
        return self.s.repo_id or f"local/{_slug(self.run.name)}"

    def version(self, r: int) -> str:
        return f"round-{r}"

    def dataset_dir(self, r: int) -> str | None:
        """Where version round-r is written (None when it goes to the Hub); a local folder
        holds one version, so each version gets its own subfolder."""
        if self.hub:
            return None
        if self.s.local_dir is None:
            return f"datasets/{self.version(r)}"
        root = Path(self.s.local_dir).expanduser().resolve()
        return self.arg(root / self.version(r))

    def dataset_args(self, r: int) -> list[str]:
        if self.hub:
            return ["--dataset", self.repo_id, "--revision", self.version(r)]
        return ["--dataset", self.dataset_dir(r)]

    def parent(self, r: int) -> tuple[str, str]:
        """The model round r trains from, and its role."""
        if r == 1 or self.s.init_from == "base":
            return self.base_model, "base model"
        return self.model(r - 1), f"model of round {r - 1}"

    def voter(self, r: int) -> tuple[str, str | None, list[str], str]:
        """(engine, model, engine args, role) of the judge that votes round r."""
        if r == 1 and self.s.bootstrap_engine:
            model = self.s.bootstrap_model
            if model and self.s.bootstrap_engine != "openai":
                model = self.source(model, "--bootstrap-model")
            return self.s.bootstrap_engine, model, self.s.bootstrap_args, "bootstrap judge"
        if r == 1:
            return self.s.engine, self.base_model, self.s.engine_args, "base model"
        return self.s.engine, self.model(r - 1), self.s.engine_args, f"model of round {r - 1}"

    # --- commands ------------------------------------------------------------------------

    @staticmethod
    def data(*args) -> list[str]:
        return [sys.executable, "-m", "evoq_data.cli", *map(str, args)]

    def train(self, *args) -> list[str]:
        if self.s.accelerate_config:
            launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                      self.arg(accelerate_file(self.s.accelerate_config)), "-m"]
        else:
            launch = [sys.executable, "-m"]
        return [*launch, "evoq_train.cli", *map(str, args)]

    @staticmethod
    def engine_options(engine: str, model: str | None, args: list[str]) -> list[str]:
        out = ["--engine", engine]
        if model:
            out += ["--model", model]
        for key, value in parse_key_values(args, "--engine-arg").items():
            out += [OPTION_ARGS[key], value] if key in OPTION_ARGS else \
                ["--engine-arg", f"{key}={value}"]
        return out

    def recipe(self) -> str:
        path = Path(self.s.train_config).expanduser()
        return self.arg(path) if path.is_file() else self.s.train_config

    def evals(self) -> list[tuple[str, Path]]:
        return [check_eval(spec, deep=False) for spec in self.s.evals]


# --- the plan ----------------------------------------------------------------------------

def plan(ctx: Context) -> list[Step]:
    """Every step of the run, in order."""
    steps: list[Step] = []
    if ctx.s.evals and ctx.s.eval_base:
        steps += [score_step(ctx, 0), eval_step(ctx, 0)]
    for r in range(1, ctx.s.rounds + 1):
        steps.append(pairs_step(ctx, r))
        if ctx.mixes(r):
            steps += [distort_step(ctx, r), synthetic_pairs_step(ctx, r), mix_pairs_step(ctx, r)]
        steps += [vote_step(ctx, r), aggregate_step(ctx, r), push_step(ctx, r), grpo_step(ctx, r)]
        if ctx.s.evals:
            steps += [score_step(ctx, r), eval_step(ctx, r)]
    return steps


def _manifest(path: str) -> str:
    return str(Path(path).with_name(Path(path).stem + ".manifest.json"))


def pairs_step(ctx: Context, r: int) -> Step:
    out = ctx.random_pairs(r)
    return Step(r, "pairs", outputs=[out, _manifest(out)], command=lambda: ctx.data(
        "pairs", "--images", ctx.source(ctx.s.pool, "--pool"),
        "--num-pairs", ctx.s.pairs_per_round, "--seed", derived_seed(ctx.s.seed, "pairs", r),
        "--out", out, "--quiet"))


def distort_step(ctx: Context, r: int) -> Step:
    """Distorted variants of a seeded random subset of the round's pool images."""
    refs, out = f"round-{r}/synthetic/refs", f"round-{r}/synthetic/distorted"

    def choose_references() -> None:
        import numpy as np
        import pyarrow.parquet as pq

        table = pq.read_table(ctx.run / ctx.random_pairs(r))
        images = {}
        for side in ("a", "b"):
            images.update(zip(table.column(f"image_{side}_id").to_pylist(),
                              table.column(f"image_{side}_path").to_pylist(), strict=True))
        ids = sorted(images)
        want = min(len(ids), max(1, math.ceil(2 * ctx.s.synthetic_pairs
                                              / SYNTHETIC_PAIRS_PER_REFERENCE)))
        rng = np.random.default_rng(derived_seed(ctx.s.seed, "references", r))
        folder = ctx.run / refs
        folder.mkdir(parents=True, exist_ok=True)
        for n, i in enumerate(sorted(rng.choice(len(ids), want, replace=False))):
            target = Path(images[ids[i]])
            target = target if target.is_absolute() else (ctx.run / target).resolve()
            os.symlink(target, folder / f"{n:05d}-{target.name}")

    return Step(r, "distort", outputs=[refs, out], inputs=[ctx.random_pairs(r)],
                before=choose_references, command=lambda: ctx.data(
                    "distort", "--images", refs, "--out", out,
                    "--seed", derived_seed(ctx.s.seed, "distort", r), "--quiet"))


def synthetic_pairs_step(ctx: Context, r: int) -> Step:
    folder, out = f"round-{r}/synthetic/distorted", f"round-{r}/synthetic/pairs.parquet"

    def command() -> list[str]:
        from evoq_data.pairs.synthetic import read_distortions, synthetic_pairs

        available = synthetic_pairs(read_distortions(ctx.run / folder)).num_rows
        return ctx.data("pairs", "--synthetic", folder,
                        "--num-pairs", min(ctx.s.synthetic_pairs, available),
                        "--seed", derived_seed(ctx.s.seed, "synthetic-pairs", r),
                        "--out", out)

    return Step(r, "synthetic-pairs", outputs=[out, _manifest(out)], inputs=[folder],
                command=command)


def mix_pairs_step(ctx: Context, r: int) -> Step:
    """The round's pairs file: the random pairs, then the synthetic ones (one VOTES_DIR, so
    one aggregate and one dataset version per round)."""
    random_, synthetic, out = ctx.random_pairs(r), f"round-{r}/synthetic/pairs.parquet", ctx.pairs(r)

    def mix() -> None:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        from evoq_data.core.ids import file_sha256
        from evoq_data.core.manifests import read_manifest
        from evoq_data.core.schemas import PAIRS_SCHEMA
        from evoq_data.pairs.sample import write_pairs

        parts = [pq.read_table(ctx.run / p).select(PAIRS_SCHEMA.names).cast(PAIRS_SCHEMA)
                 for p in (random_, synthetic)]
        table = pa.concat_tables(parts)
        ids = table.column("pair_id").to_pylist()
        first = {}
        for i, pid in enumerate(ids):
            first.setdefault(pid, i)
        duplicates = len(ids) - len(first)
        if duplicates:
            table = table.take(pa.array(sorted(first.values())))
        assert pc.count_distinct(table.column("pair_id")).as_py() == table.num_rows
        rm = read_manifest(ctx.run / _manifest(random_), "pairs manifest")
        write_pairs(table, ctx.run / out, {
            "source": rm.get("source"), "seed": rm.get("seed"), "pool": rm.get("pool"),
            "possible_pairs": rm.get("possible_pairs"),
            "mixed": {"random": {"file": random_, "pairs": parts[0].num_rows,
                                 "sha256": file_sha256(ctx.run / random_)},
                      "synthetic": {"file": synthetic, "pairs": parts[1].num_rows,
                                    "sha256": file_sha256(ctx.run / synthetic)},
                      "duplicates_dropped": duplicates}})

    return Step(r, "mix-pairs", outputs=[out, _manifest(out)], inputs=[random_, synthetic],
                before=mix, json_stdout=False)


def vote_step(ctx: Context, r: int) -> Step:
    engine, model, args, _ = ctx.voter(r)
    inputs = [ctx.pairs(r)] + ([ctx.model(r - 1)] if r >= 2 else [])
    return Step(r, "vote", outputs=[ctx.votes(r)], inputs=inputs, clean=False,
                command=lambda: ctx.data(
                    "vote", "--pairs", ctx.pairs(r), "--out", ctx.votes(r),
                    "--votes-per-pair", ctx.s.votes_per_pair,
                    "--seed", derived_seed(ctx.s.seed, "vote", r),
                    "--max-tokens", ctx.s.max_tokens,
                    *ctx.engine_options(engine, model, args), *ctx.s.vote_args, "--quiet"))


def aggregate_step(ctx: Context, r: int) -> Step:
    def record_lineage(_summary: dict) -> dict:
        """The round and the voting model's own lineage go into the aggregate manifest, which
        `evoq-data push` copies into evoq.json and the dataset card."""
        from evoq_data.core.manifests import read_manifest

        from .lineage import voter_lineage

        stats = read_manifest(ctx.run / ctx.prefs(r) / "stats.json", "aggregate statistics")
        pairs = stats.get("pairs") or {}
        if pairs.get("kept") and pairs.get("without_valid_votes") == pairs.get("kept"):
            votes = stats.get("votes") or {}
            statuses = ", ".join(f"{k} {v}" for k, v in
                                 sorted((votes.get("by_parse_status") or {}).items()))
            raise EvoqError(
                f"every one of the {votes.get('total')} votes of round {r} was invalid "
                f"({statuses}): no pair has a pseudo-label, nothing to publish or train on; "
                f"see {ctx.prefs(r)}/stats.md and the raw answers in {ctx.votes(r)}")
        path = ctx.run / ctx.prefs(r) / "manifest.json"
        manifest = read_manifest(path, "aggregate manifest")
        manifest["evolve"] = voter_lineage(ctx, r)
        write_json_atomic(manifest, path)
        return {}

    return Step(r, "aggregate", outputs=[ctx.prefs(r)], inputs=[ctx.votes(r)],
                after=record_lineage, command=lambda: ctx.data(
                    "aggregate", "--votes", ctx.votes(r), "--out", ctx.prefs(r), "--quiet"))


def push_step(ctx: Context, r: int) -> Step:
    local = ctx.dataset_dir(r)

    def command() -> list[str]:
        where = ["--local-dir", local] if local else []
        return ctx.data("push", "--prefs", ctx.prefs(r), "--repo-id", ctx.repo_id,
                        "--version", ctx.version(r), *where, "--quiet")

    return Step(r, "push", outputs=[local] if local else [], inputs=[ctx.prefs(r)],
                clean=False, command=command)


def complete_checkpoints(folder: Path) -> list[Path]:
    """The checkpoint-N folders of a training output that were saved completely (the trainer
    writes trainer_state.json last); incomplete ones are removed so training resumes from the
    last complete one."""
    done = []
    for ckpt in sorted(folder.glob("checkpoint-*")):
        state = ckpt / "trainer_state.json"
        try:
            json.loads(state.read_text())
            done.append(ckpt)
        except (OSError, json.JSONDecodeError):
            shutil.rmtree(ckpt, ignore_errors=True)
    return done


def grpo_step(ctx: Context, r: int) -> Step:
    out = ctx.model(r)
    parent, _ = ctx.parent(r)

    def command() -> list[str]:
        resume = ["--resume-from-checkpoint", "true"] if complete_checkpoints(
            ctx.run / out) else []
        return ctx.train("grpo", "--config", ctx.recipe(), *ctx.dataset_args(r),
                         "--model", parent, "--output-dir", out, *resume,
                         "--disable_tqdm", "true", *parse_train_args(ctx.s.train_args))

    def after(summary: dict) -> dict:
        from .lineage import record_model_lineage
        from .report import training_end

        extra = record_model_lineage(ctx, r)
        extra["train_end"] = training_end(ctx.run / out, ctx.run / Step(r, "grpo", []).log)
        return extra

    inputs = ([ctx.dataset_dir(r)] if ctx.dataset_dir(r) else []) + \
        ([parent] if parent.startswith("round-") else [])
    return Step(r, "grpo", outputs=[out], inputs=inputs, clean=False, command=command,
                after=after, exclude=("checkpoint-*",))


def link_eval_images(ctx: Context) -> None:
    """RUN/eval-images/<name>/: a link to every image of each --eval manifest, so one
    `evoq-data score` call scores exactly those images."""
    root = ctx.run / "eval-images"
    for name, labels in ctx.evals():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for n, image in enumerate(eval_images(labels)):
            link = folder / f"{n:05d}-{image.name}"
            target = image.resolve()
            if link.is_symlink() and Path(os.readlink(link)) == target:
                continue
            link.unlink(missing_ok=True)
            os.symlink(target, link)


def score_step(ctx: Context, r: int) -> Step:
    model = ctx.base_model if r == 0 else ctx.model(r)
    out = ctx.scores(r)
    return Step(r, "score", outputs=[out, out.replace(".parquet", ".summary.parquet"),
                                     _manifest(out)],
                inputs=[] if r == 0 else [ctx.model(r)], before=lambda: link_eval_images(ctx),
                command=lambda: ctx.data(
                    "score", "--images", "eval-images", "--samples", ctx.s.score_samples,
                    "--seed", ctx.s.seed, "--max-tokens", ctx.s.max_tokens,
                    *ctx.engine_options(ctx.s.engine, model, ctx.s.engine_args),
                    "--out", out, "--quiet"))


def scorable(ctx: Context, r: int) -> dict[str, tuple[int, int]]:
    """Per --eval set: (images with a valid mean score, images) in round r's scores."""
    import pyarrow.parquet as pq

    from evoq_data.core.ids import file_sha256

    summary = pq.read_table(ctx.run / ctx.scores(r).replace(".parquet", ".summary.parquet"),
                            columns=["image_id", "score_mean"]).to_pylist()
    valid = {row["image_id"] for row in summary if row["score_mean"] is not None}
    out = {}
    for name, labels in ctx.evals():
        ids = {file_sha256(f) for f in eval_images(labels)}
        out[name] = (len(ids & valid), len(ids))
    return out


def eval_step(ctx: Context, r: int) -> Step:
    """`evoq-data eval` on the sets where at least 3 images got a valid score; a set where the
    model wrote fewer valid scores is recorded as such (a result of the model, not a failure
    of the run) and shown as "—" with the reason in the report."""
    from evoq_data.evaluate.metrics import MIN_MATCHED

    folder = f"round-{r}/eval"
    files = [f"{folder}/metrics.md", f"{folder}/metrics.json", f"{folder}/scatter.png"]
    step = Step(r, "eval", outputs=list(files), inputs=[ctx.scores(r)], json_stdout=False)
    skipped: dict[str, str] = {}

    def command() -> list[str] | None:
        counts = scorable(ctx, r)
        skipped.clear()
        labels = []
        for name, path in ctx.evals():
            ok, total = counts[name]
            if ok < MIN_MATCHED:
                skipped[name] = (f"only {ok} of {total} image(s) got a valid score; a "
                                 f"correlation needs at least {MIN_MATCHED}")
            else:
                labels += ["--labels", f"{name}={ctx.arg(path)}"]
        step.outputs = list(files) if labels else []
        return ctx.data("eval", "--scores", ctx.scores(r), *labels, "--out", folder) \
            if labels else None

    def after(_summary: dict) -> dict:
        keep = ("n", "srcc", "plcc", "plcc_logistic")
        result = {"benchmarks": {}, "wavg": None, "skipped": dict(skipped)}
        if step.outputs:
            doc = json.loads((ctx.run / folder / "metrics.json").read_text())
            result["benchmarks"] = {b["benchmark"]: {k: b.get(k) for k in keep}
                                    for b in doc["benchmarks"]}
            result["wavg"] = {k: doc["wavg"].get(k) for k in keep}
        return result

    step.command, step.after = command, after
    return step


def remove_outputs(ctx: Context, step: Step) -> None:
    """Clear what a step left half-written, inside RUN only, before it runs again."""
    for rel in step.outputs:
        path = (ctx.run / rel).resolve()
        if ctx.run.resolve() not in path.parents:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
