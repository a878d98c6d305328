"""The steps of an evolve run, in order (:func:`build_steps`).

A step is either a child command (built by :mod:`.commands` from the run's settings and
layout, and from *facts* a reader gathers first where the command depends on what an earlier
step made) or in-process work (:mod:`.work`, :mod:`.lineage`); either way it is recorded in
state.json with its outputs hashed. ``finish`` reads what the step wrote into its summary
(and, for training, records the model's lineage in its own output folder).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from evoq_data.evaluate.metrics import MIN_MATCHED

from . import commands as cmd
from . import work
from .context import RunContext
from .layout import manifest_of, summary_of


@dataclass(frozen=True)
class Step:
    """One step of the run (see the module docstring)."""

    round: int
    kind: str
    name: str
    log: str
    outputs: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    command: Callable[[dict], list[str] | None] | None = None  # facts -> argv; no I/O
    facts: Callable[[], dict] | None = None      # reads what the command depends on
    work: Callable[[], dict] | None = None       # in-process work -> summary fields
    finish: Callable[[dict], dict] | None = None  # facts -> summary fields, after the work
    clean: bool = True              # remove the outputs before a new attempt (False: resumes)
    redo_until: str | None = None   # run again on every attempt until that step is done
    exclude: tuple[str, ...] = ()   # top-level entries of an output folder left out of its hash
    json_stdout: bool = True

    def argv(self, facts: dict | None = None) -> list[str] | None:
        return self.command(facts or {}) if self.command else None


def _step(ctx: RunContext, r: int, kind: str, **fields) -> Step:
    rl = ctx.layout.round(r)
    for key in ("outputs", "inputs"):
        fields[key] = tuple(fields.get(key, ()))
    return Step(r, kind, rl.step(kind), rl.log(kind), **fields)


def build_steps(ctx: RunContext) -> list[Step]:
    """Every step of the run, in order."""
    s = ctx.settings
    steps: list[Step] = []
    if s.evals:
        steps.append(eval_images_step(ctx))
        if s.eval_base:
            steps += [score_step(ctx, 0), eval_step(ctx, 0)]
    for r in range(1, s.rounds + 1):
        steps.append(pairs_step(ctx, r))
        if ctx.mixes(r):
            steps += [references_step(ctx, r), distort_step(ctx, r),
                      synthetic_pairs_step(ctx, r), mix_pairs_step(ctx, r)]
        steps += [vote_step(ctx, r), voted_by_step(ctx, r), aggregate_step(ctx, r)]
        if ctx.sources.pool_labels:
            steps.append(label_accuracy_step(ctx, r))
        steps += [push_step(ctx, r), checkpoints_step(ctx, r), grpo_step(ctx, r)]
        if s.evals:
            steps += [score_step(ctx, r), eval_step(ctx, r)]
    return steps


def _path(ctx: RunContext, rel: str):
    return ctx.layout.path(rel)


def pairs_step(ctx: RunContext, r: int) -> Step:
    out = ctx.random_pairs(r)
    return _step(ctx, r, "pairs", outputs=[out, manifest_of(out)],
                 command=lambda _: cmd.pairs_argv(ctx, r))


def references_step(ctx: RunContext, r: int) -> Step:
    """A seeded random subset of the round's pool images, to distort."""
    rl, pairs = ctx.layout.round(r), ctx.random_pairs(r)
    return _step(ctx, r, "references", outputs=[rl.references], inputs=[pairs],
                 work=lambda: work.choose_references(
                     _path(ctx, pairs), _path(ctx, rl.references), base=ctx.layout.root,
                     synthetic_pairs=ctx.settings.synthetic_pairs,
                     seed=cmd.derived_seed(ctx.settings.seed, "references", r)))


def distort_step(ctx: RunContext, r: int) -> Step:
    rl = ctx.layout.round(r)
    return _step(ctx, r, "distort", outputs=[rl.distorted], inputs=[rl.references],
                 command=lambda _: cmd.distort_argv(ctx, r))


def synthetic_pairs_step(ctx: RunContext, r: int) -> Step:
    rl = ctx.layout.round(r)
    return _step(ctx, r, "synthetic-pairs",
                 outputs=[rl.synthetic_pairs, manifest_of(rl.synthetic_pairs)],
                 inputs=[rl.distorted],
                 facts=lambda: {"available": work.available_synthetic_pairs(
                     _path(ctx, rl.distorted))},
                 command=lambda f: cmd.synthetic_pairs_argv(ctx, r, f["available"]))


def mix_pairs_step(ctx: RunContext, r: int) -> Step:
    rl, random_ = ctx.layout.round(r), ctx.random_pairs(r)
    return _step(ctx, r, "mix-pairs", outputs=[rl.pairs, manifest_of(rl.pairs)],
                 inputs=[random_, rl.synthetic_pairs], json_stdout=False,
                 work=lambda: work.mix_pairs(_path(ctx, random_),
                                             _path(ctx, rl.synthetic_pairs),
                                             _path(ctx, rl.pairs),
                                             names=(random_, rl.synthetic_pairs)))


def vote_step(ctx: RunContext, r: int) -> Step:
    rl = ctx.layout.round(r)
    inputs = [rl.pairs] + ([ctx.layout.round(r - 1).model] if r >= 2 else [])
    return _step(ctx, r, "vote", outputs=[rl.votes], inputs=inputs, clean=False,
                 command=lambda _: cmd.vote_argv(ctx, r))


def voted_by_step(ctx: RunContext, r: int) -> Step:
    """Who voted the round (for the dataset card, through ``aggregate --lineage``)."""
    from .lineage import write_voted_by

    rl = ctx.layout.round(r)
    return _step(ctx, r, "voted-by", outputs=[rl.voted_by], inputs=[rl.votes],
                 work=lambda: write_voted_by(ctx, r))


def aggregate_step(ctx: RunContext, r: int) -> Step:
    rl = ctx.layout.round(r)

    def finish(_facts: dict) -> dict:
        work.check_pseudo_labels(_path(ctx, rl.prefs_stats), r, prefs=rl.prefs,
                                 votes=rl.votes)
        return {}

    return _step(ctx, r, "aggregate", outputs=[rl.prefs], inputs=[rl.votes, rl.voted_by],
                 command=lambda _: cmd.aggregate_argv(ctx, r), finish=finish)


def label_accuracy_step(ctx: RunContext, r: int) -> Step:
    """With --pool-labels: `evoq-data eval --prefs` measures the round's pseudo-labels
    against the labels. A measurement only: no later step reads its folder. A round without a
    pair of known order is recorded as such (shown as "—" with the reason in the report)."""
    rl = ctx.layout.round(r)

    def facts() -> dict:
        return {"known": work.pairs_with_known_order(_path(ctx, rl.prefs),
                                                     _path(ctx, ctx.sources.pool_labels))}

    def finish(f: dict) -> dict:
        if not f["known"]:
            return {"label_accuracy": None,
                    "skipped": "no pair of the round has both images labelled with "
                               "different MOS (or a known order)"}
        return {"label_accuracy": work.read_label_accuracy(
            _path(ctx, rl.label_accuracy_files[1]))}

    return _step(ctx, r, "label-accuracy", outputs=list(rl.label_accuracy_files),
                 inputs=[rl.prefs], json_stdout=False, facts=facts,
                 command=lambda f: cmd.label_accuracy_argv(ctx, r) if f["known"] else None,
                 finish=finish)


def push_step(ctx: RunContext, r: int) -> Step:
    local = ctx.dataset_dir(r)
    return _step(ctx, r, "push", outputs=[local] if local else [],
                 inputs=[ctx.layout.round(r).prefs], clean=False,
                 command=lambda _: cmd.push_argv(ctx, r))


def checkpoints_step(ctx: RunContext, r: int) -> Step:
    """Before each attempt of the round's training: drop incomplete checkpoints."""
    rl = ctx.layout.round(r)
    return _step(ctx, r, "checkpoints", redo_until=rl.step("grpo"), clean=False,
                 work=lambda: work.drop_incomplete_checkpoints(_path(ctx, rl.model)))


def grpo_step(ctx: RunContext, r: int) -> Step:
    rl, parent = ctx.layout.round(r), ctx.parent(r)

    def facts() -> dict:
        done = ctx.require_state().summary(rl.step("checkpoints")).get("complete")
        return {"resume": bool(done)}

    def finish(_facts: dict) -> dict:
        from .lineage import record_model_lineage
        from .report import training_end

        extra = record_model_lineage(ctx, r)
        extra["train_end"] = training_end(_path(ctx, rl.model), _path(ctx, rl.log("grpo")))
        return extra

    dataset = ctx.dataset_dir(r)
    inputs = ([dataset] if dataset else []) + ([parent.path] if parent.round is not None else [])
    return _step(ctx, r, "grpo", outputs=[rl.model], inputs=inputs, clean=False,
                 facts=facts, command=lambda f: cmd.grpo_argv(ctx, r, f["resume"]),
                 finish=finish, exclude=("checkpoint-*",))


def eval_sets(ctx: RunContext) -> dict:
    return {name: _path(ctx, labels) for name, labels in ctx.sources.evals}


def eval_images_step(ctx: RunContext) -> Step:
    """RUN/eval-images/<name>/: links to the images of each --eval manifest (round 0)."""
    root = ctx.layout.eval_images()
    return _step(ctx, 0, "eval-images", outputs=[root], json_stdout=False,
                 work=lambda: work.link_eval_images(_path(ctx, root), eval_sets(ctx)))


def score_step(ctx: RunContext, r: int) -> Step:
    rl = ctx.layout.round(r)
    return _step(ctx, r, "score",
                 outputs=[rl.scores, summary_of(rl.scores), manifest_of(rl.scores)],
                 inputs=[ctx.layout.eval_images()] + ([rl.model] if r else []),
                 command=lambda _: cmd.score_argv(ctx, r))


def eval_step(ctx: RunContext, r: int) -> Step:
    """`evoq-data eval` on the sets where at least 3 images got a valid score; a set where
    the model wrote fewer is recorded as such (a result of the model, not a failure of the
    run) and shown as "—" with the reason in the report."""
    rl = ctx.layout.round(r)

    def facts() -> dict:
        counts = work.scorable(_path(ctx, summary_of(rl.scores)), eval_sets(ctx))
        sets, skipped = [], {}
        for name, (ok, total) in counts.items():
            if ok < MIN_MATCHED:
                skipped[name] = (f"only {ok} of {total} image(s) got a valid score; a "
                                 f"correlation needs at least {MIN_MATCHED}")
            else:
                sets.append(name)
        return {"sets": sets, "skipped": skipped}

    def finish(f: dict) -> dict:
        result = {"benchmarks": {}, "wavg": None, "skipped": f["skipped"]}
        if f["sets"]:
            result.update(work.read_metrics(_path(ctx, rl.metrics[1])))
        return result

    return _step(ctx, r, "eval", outputs=list(rl.metrics), inputs=[rl.scores],
                 json_stdout=False, facts=facts,
                 command=lambda f: cmd.eval_argv(ctx, r, f["sets"]), finish=finish)
