"""Lineage: which model voted each dataset version, and which dataset version and parent model
each model was trained from.

Three places hold it:

* ``RUN/lineage.json`` (schema below), rewritten after every step, and the table
  ``evoq-train lineage RUN`` prints from it;
* the dataset card: ``round-<r>/voted-by.json``, which ``evoq-data aggregate --lineage``
  records as its manifest's ``evolve`` entry (the round, the
  voting model with its revision and role, and for a model of the run the version it was
  trained on), which ``evoq-data push`` copies into ``evoq.json`` and the card;
* the model card: ``evoq_train.json`` in the training output gets the same ``evolve`` entry
  (round, parent model and revision, dataset version and content hash, who voted that
  dataset) and ``README.md`` is rendered again from ``cards/model_card.md.j2``.

With ``--pool-labels``, each dataset entry of lineage.json also holds ``label_accuracy``: its
pseudo-labels measured against those labels (the round's ``label-accuracy`` step; null when
no pair had a known order). It is in lineage.json only, never in a card or a training input.

A model is identified by its path (relative to RUN for the run's own models) or Hub id and its
*revision* as evoq records it with every vote (``sha256:`` of a local folder, the version of a
classical judge, or ``unknown`` for a Hub id without one); ``content_hash`` is the sha256 of the
model's files as state.json records them.

lineage.json::

    {"schema_version": 1,
     "run": {"base_model", "base_model_revision", "pool", "seed", "rounds", "init_from",
             "bootstrap_engine", "repo_id", "published_to": "local" | "hub"},
     "rounds": [{"round": 1,
                 "dataset": {"repo_id", "version", "content_hash", "location", "commit",
                             "pairs", "synthetic_pairs",
                             "voted_by": {"role", "engine", "model", "model_revision",
                                          ["round", "trained_on"]},
                             ["label_accuracy": {"accuracy", "correct", "decisive", ...,
                                                 "by_agreement": {bin: {...}}} | null]
                             } | null,
                 "model": {"path", "revision", "content_hash", "global_steps", "recipe",
                           "trained_on": {"repo_id", "version", "content_hash"},
                           "parent": {"model", "revision", "role"}} | null}, ...]}
"""

from __future__ import annotations

from evoq_data.core.errors import EvoqError
from evoq_data.core.io import read_json, write_json_atomic
from evoq_data.core.manifests import read_manifest

from .context import ModelRef, RunContext

SCHEMA_VERSION = 1


def base_revision(ctx: RunContext) -> str:
    """The base model's revision as a vote would record it."""
    from evoq_data.generation.spec import model_revision_of

    from .config import local_or_hub

    kind, path = local_or_hub(ctx.settings.model, "--model", want="any")
    return model_revision_of(str(path)) if kind == "local" else "unknown"


def dataset_ref(ctx: RunContext, r: int) -> dict | None:
    s = ctx.require_state().summary(ctx.layout.round(r).step("push"))
    if not s:
        return None
    return {"repo_id": s.get("repo_id"), "version": s.get("version"),
            "content_hash": s.get("content_hash")}


def model_revision(ctx: RunContext, model: ModelRef) -> str:
    """The revision of the base model or of a round's model."""
    if model.round is not None:
        grpo = ctx.layout.round(model.round).step("grpo")
        return ctx.require_state().summary(grpo).get("revision", "unknown")
    return base_revision(ctx)


def voter_lineage(ctx: RunContext, r: int) -> dict:
    """The ``evolve`` entry of round r's aggregate manifest (and so of its dataset card)."""
    rl = ctx.layout.round(r)
    votes = read_manifest(ctx.layout.path(rl.vote_manifest), "vote manifest")
    voted_by = {"role": ctx.voter(r).role, "engine": votes.get("engine"),
                "model": votes.get("model"), "model_revision": votes.get("model_revision")}
    if r >= 2:
        voted_by["round"] = r - 1
        voted_by["trained_on"] = dataset_ref(ctx, r - 1)
        parent = ctx.parent(r - 1)
        voted_by["trained_from"] = {"model": parent.path, "role": parent.role,
                                    "revision": model_revision(ctx, parent)}
    return {"round": r, "version": rl.version, "base_model": ctx.sources.base_model,
            "voted_by": voted_by}


def write_voted_by(ctx: RunContext, r: int) -> dict:
    """Write round r's ``voted-by.json`` (the aggregate's ``--lineage`` file)."""
    write_json_atomic(voter_lineage(ctx, r), ctx.layout.path(ctx.layout.round(r).voted_by))
    return {}


def record_model_lineage(ctx: RunContext, r: int) -> dict:
    """Add the ``evolve`` entry to round r's evoq_train.json and render its card again;
    return the model's revision (as a vote in the next round will record it)."""
    from evoq_data.generation.spec import model_revision_of

    from ..trainer import LINEAGE_FILE, write_model_card

    rl = ctx.layout.round(r)
    out = ctx.layout.path(rl.model)
    lineage = read_manifest(out / LINEAGE_FILE, "training lineage")
    parent = ctx.parent(r)
    prefs = read_manifest(ctx.layout.path(rl.prefs_manifest), "aggregate manifest")
    ref = dataset_ref(ctx, r) or {}
    lineage["evolve"] = {
        "round": r, "base_model": ctx.sources.base_model, "init_from": ctx.settings.init_from,
        "parent_model": parent.path, "parent_role": parent.role,
        "parent_revision": model_revision(ctx, parent),
        "dataset_repo_id": ref.get("repo_id"), "dataset_version": ref.get("version"),
        "dataset_content_hash": ref.get("content_hash"),
        "dataset_voted_by": (prefs.get("evolve") or {}).get("voted_by"),
    }
    write_model_card(out, lineage)
    return {"revision": model_revision_of(str(out)), "global_steps": lineage.get("global_steps"),
            "recipe": lineage.get("recipe")}


def _output_hash(ctx: RunContext, name: str) -> str | None:
    rec = ctx.require_state().step(name) or {}
    outs = rec.get("outputs") or []
    return outs[0]["sha256"] if outs else None


def round_lineage(ctx: RunContext, r: int) -> dict:
    state, rl = ctx.require_state(), ctx.layout.round(r)
    entry: dict = {"round": r, "dataset": None, "model": None}
    if state.done(rl.step("push")):
        push = state.summary(rl.step("push"))
        prefs = read_manifest(ctx.layout.path(rl.prefs_manifest), "aggregate manifest")
        stats = read_json(ctx.layout.path(rl.prefs_stats), "aggregate statistics",
                          missing_ok=True) or {}
        mixed = (read_manifest(ctx.layout.path(rl.pairs), "pairs manifest", missing_ok=True)
                 or {}).get("mixed") or {}
        entry["dataset"] = {
            "repo_id": push.get("repo_id"), "version": push.get("version"),
            "content_hash": push.get("content_hash"),
            "location": ctx.dataset_dir(r) or push.get("endpoint", "hub"),
            "commit": push.get("commit"),
            "pairs": (stats.get("pairs") or {}).get("total"),
            "synthetic_pairs": (mixed.get("synthetic") or {}).get("pairs", 0),
            "voted_by": (prefs.get("evolve") or {}).get("voted_by"),
        }
        if ctx.sources.pool_labels:
            entry["dataset"]["label_accuracy"] = state.summary(
                rl.step("label-accuracy")).get("label_accuracy")
    if state.done(rl.step("grpo")):
        grpo = state.summary(rl.step("grpo"))
        parent = ctx.parent(r)
        entry["model"] = {
            "path": rl.model, "revision": grpo.get("revision"),
            "content_hash": _output_hash(ctx, rl.step("grpo")),
            "global_steps": grpo.get("global_steps"), "recipe": grpo.get("recipe"),
            "trained_on": dataset_ref(ctx, r),
            "parent": {"model": parent.path, "revision": model_revision(ctx, parent),
                       "role": parent.role},
        }
    return entry


def build_lineage(ctx: RunContext) -> dict:
    s = ctx.settings
    return {
        "schema_version": SCHEMA_VERSION,
        "run": {"base_model": ctx.sources.base_model, "base_model_revision": base_revision(ctx),
                "pool": ctx.sources.pool, "seed": s.seed, "rounds": ctx.rounds_held,
                "init_from": s.init_from, "bootstrap_engine": s.bootstrap_engine,
                "repo_id": ctx.repo_id, "published_to": "hub" if ctx.hub else "local"},
        "rounds": [round_lineage(ctx, r) for r in range(1, ctx.rounds_held + 1)],
    }


def write_lineage(ctx: RunContext):
    return write_json_atomic(build_lineage(ctx), ctx.layout.lineage)


# --- the table ---------------------------------------------------------------------------

def _short(value: str | None, n: int = 19) -> str:
    if not value:
        return "-"
    return value[:n] if value.startswith("sha256:") else value


def lineage_table(doc: dict) -> str:
    """The chain as a plain-text table, one line per round."""
    head = ("round", "dataset", "content hash", "voted by", "model", "revision",
            "trained from")
    rows = []
    for entry in doc.get("rounds", []):
        d, m = entry.get("dataset") or {}, entry.get("model") or {}
        voter = d.get("voted_by") or {}
        parent = m.get("parent") or {}
        rows.append((
            str(entry["round"]),
            f"{d['repo_id']}@{d['version']}" if d else "(not yet)",
            _short(d.get("content_hash")),
            f"{voter.get('model')} ({voter.get('role')}, {_short(voter.get('model_revision'))})"
            if voter else "-",
            m.get("path", "(not yet)"),
            _short(m.get("revision")),
            f"{parent.get('model')} ({parent.get('role')})" if parent else "-",
        ))
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    run = doc.get("run", {})
    lines = [f"base model {run.get('base_model')} ({_short(run.get('base_model_revision'))}), "
             f"pool {run.get('pool')}, {run.get('rounds')} round(s), datasets published to "
             f"{run.get('published_to')} as {run.get('repo_id')}"]
    for row in [head, *rows]:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines) + "\n"


def read_lineage(run) -> dict:
    from pathlib import Path

    from .layout import LINEAGE, RunLayout

    path = RunLayout(Path(run)).lineage
    if not path.is_file():
        if not Path(run).is_dir():
            raise EvoqError(f"run folder not found: {run}")
        raise EvoqError(f"{run} has no {LINEAGE}: not an evoq-train evolve run folder "
                        "(or no step has finished yet)")
    doc = read_manifest(path, "lineage")
    check_lineage(path, doc)
    return doc


def check_lineage(path, doc: dict) -> None:
    """One line naming the file and the key when lineage.json is not as evolve writes it."""
    def bad(key: str, want: str) -> EvoqError:
        return EvoqError(f"{path}: {key} must be {want}; the file was edited or damaged: "
                         "rerun evoq-train evolve with the run's settings to write it again")

    def text(obj: dict, key: str, where: str, required: bool = False) -> None:
        value = obj.get(key)
        if (value is None and required) or not isinstance(value, str | type(None)):
            raise bad(f"{where}.{key}", "a string")

    if not isinstance(doc.get("run"), dict):
        raise bad("'run'", "an object")
    text(doc["run"], "base_model_revision", "run")
    rounds = doc.get("rounds")
    if not isinstance(rounds, list):
        raise bad("'rounds'", "a list")
    for i, entry in enumerate(rounds):
        where = f"rounds[{i}]"
        if not isinstance(entry, dict):
            raise bad(where, "an object")
        if not isinstance(entry.get("round"), int):
            raise bad(f"{where}.round", "an integer")
        for part, required in (("dataset", ("repo_id", "version")), ("model", ("path",))):
            value = entry.get(part)
            if value is None:
                continue
            if not isinstance(value, dict):
                raise bad(f"{where}.{part}", "an object or null")
            for key in required:
                text(value, key, f"{where}.{part}", required=True)
            for key in ("content_hash", "revision"):
                text(value, key, f"{where}.{part}")
            for sub in ("voted_by", "parent"):
                if not isinstance(value.get(sub), dict | type(None)):
                    raise bad(f"{where}.{part}.{sub}", "an object or null")
                if value.get(sub):
                    text(value[sub], "model_revision", f"{where}.{part}.{sub}")
