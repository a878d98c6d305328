"""Lineage: which model voted each dataset version, and which dataset version and parent model
each model was trained from.

Three places hold it:

* ``RUN/lineage.json`` (schema below), rewritten after every step, and the table
  ``evoq-train lineage RUN`` prints from it;
* the dataset card: the round's aggregate manifest gets an ``evolve`` entry (the round, the
  voting model with its revision and role, and for a model of the run the version it was
  trained on), which ``evoq-data push`` copies into ``evoq.json`` and the card;
* the model card: ``evoq_train.json`` in the training output gets the same ``evolve`` entry
  (round, parent model and revision, dataset version and content hash, who voted that
  dataset) and ``README.md`` is rendered again from ``cards/model_card.md.j2``.

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
                                          ["round", "trained_on"]}} | null,
                 "model": {"path", "revision", "content_hash", "global_steps", "recipe",
                           "trained_on": {"repo_id", "version", "content_hash"},
                           "parent": {"model", "revision", "role"}} | null}, ...]}
"""

from __future__ import annotations

import json
from pathlib import Path

from evoq_data.core.errors import EvoqError
from evoq_data.core.io import write_json_atomic, write_text_atomic
from evoq_data.core.manifests import read_manifest

LINEAGE_NAME = "lineage.json"
SCHEMA_VERSION = 1


def base_revision(ctx) -> str:
    """The base model's revision as a vote would record it."""
    from evoq_data.generation.spec import model_revision_of

    kind, path = _kind(ctx.s.model)
    return model_revision_of(str(path)) if kind == "local" else "unknown"


def _kind(value: str):
    from .config import local_or_hub

    return local_or_hub(value, "--model", want="any")


def dataset_ref(ctx, r: int) -> dict | None:
    s = ctx.state.summary(f"round-{r}/push")
    if not s:
        return None
    return {"repo_id": s.get("repo_id"), "version": s.get("version"),
            "content_hash": s.get("content_hash")}


def model_revision(ctx, model: str) -> str:
    """The revision of a model named as the children name it (base or a round's model)."""
    if model.startswith("round-") and model.endswith("/model"):
        return ctx.state.summary(f"{model.split('/')[0]}/grpo").get("revision", "unknown")
    return base_revision(ctx)


def voter_lineage(ctx, r: int) -> dict:
    """The ``evolve`` entry of round r's aggregate manifest (and so of its dataset card)."""
    votes = read_manifest(ctx.run / ctx.votes(r) / "manifest.json", "vote manifest")
    _, _, _, role = ctx.voter(r)
    voted_by = {"role": role, "engine": votes.get("engine"), "model": votes.get("model"),
                "model_revision": votes.get("model_revision")}
    if r >= 2:
        voted_by["round"] = r - 1
        voted_by["trained_on"] = dataset_ref(ctx, r - 1)
        parent, parent_role = ctx.parent(r - 1)
        voted_by["trained_from"] = {"model": parent, "role": parent_role,
                                    "revision": model_revision(ctx, parent)}
    return {"round": r, "version": ctx.version(r), "base_model": ctx.base_model,
            "voted_by": voted_by}


def record_model_lineage(ctx, r: int) -> dict:
    """Add the ``evolve`` entry to round r's evoq_train.json and render its card again;
    return the model's revision (as a vote in the next round will record it)."""
    import jinja2

    from evoq_data.core.resources import card_path
    from evoq_data.generation.spec import model_revision_of

    out = ctx.run / ctx.model(r)
    path = out / "evoq_train.json"
    lineage = read_manifest(path, "training lineage")
    parent, role = ctx.parent(r)
    prefs = read_manifest(ctx.run / ctx.prefs(r) / "manifest.json", "aggregate manifest")
    ref = dataset_ref(ctx, r) or {}
    lineage["evolve"] = {
        "round": r, "base_model": ctx.base_model, "init_from": ctx.s.init_from,
        "parent_model": parent, "parent_role": role,
        "parent_revision": model_revision(ctx, parent),
        "dataset_repo_id": ref.get("repo_id"), "dataset_version": ref.get("version"),
        "dataset_content_hash": ref.get("content_hash"),
        "dataset_voted_by": (prefs.get("evolve") or {}).get("voted_by"),
    }
    template = jinja2.Template(card_path("model_card.md.j2").read_text(encoding="utf-8"),
                               undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    card = template.render(**lineage)
    write_json_atomic(lineage, path)
    write_text_atomic(card, out / "README.md")
    return {"revision": model_revision_of(str(out)), "global_steps": lineage.get("global_steps"),
            "recipe": lineage.get("recipe")}


def _output_hash(ctx, name: str) -> str | None:
    rec = ctx.state.step(name) or {}
    outs = rec.get("outputs") or []
    return outs[0]["sha256"] if outs else None


def build_lineage(ctx) -> dict:
    rounds = []
    for r in range(1, ctx.s.rounds + 1):
        entry = {"round": r, "dataset": None, "model": None}
        push = ctx.state.summary(f"round-{r}/push")
        if ctx.state.done(f"round-{r}/push"):
            prefs = read_manifest(ctx.run / ctx.prefs(r) / "manifest.json", "aggregate manifest")
            stats = _read_json(ctx.run / ctx.prefs(r) / "stats.json")
            mixed = ((_read_json(ctx.run / ctx.pairs(r).replace(".parquet", ".manifest.json"))
                      or {}).get("mixed") or {})
            entry["dataset"] = {
                "repo_id": push.get("repo_id"), "version": push.get("version"),
                "content_hash": push.get("content_hash"),
                "location": ctx.dataset_dir(r) or push.get("endpoint", "hub"),
                "commit": push.get("commit"),
                "pairs": (stats.get("pairs") or {}).get("total"),
                "synthetic_pairs": (mixed.get("synthetic") or {}).get("pairs", 0),
                "voted_by": (prefs.get("evolve") or {}).get("voted_by"),
            }
        if ctx.state.done(f"round-{r}/grpo"):
            grpo = ctx.state.summary(f"round-{r}/grpo")
            parent, role = ctx.parent(r)
            entry["model"] = {
                "path": ctx.model(r), "revision": grpo.get("revision"),
                "content_hash": _output_hash(ctx, f"round-{r}/grpo"),
                "global_steps": grpo.get("global_steps"), "recipe": grpo.get("recipe"),
                "trained_on": dataset_ref(ctx, r),
                "parent": {"model": parent, "revision": model_revision(ctx, parent),
                           "role": role},
            }
        rounds.append(entry)
    return {
        "schema_version": SCHEMA_VERSION,
        "run": {"base_model": ctx.base_model, "base_model_revision": base_revision(ctx),
                "pool": ctx.source(ctx.s.pool, "--pool"), "seed": ctx.s.seed,
                "rounds": ctx.s.rounds, "init_from": ctx.s.init_from,
                "bootstrap_engine": ctx.s.bootstrap_engine, "repo_id": ctx.repo_id,
                "published_to": "hub" if ctx.hub else "local"},
        "rounds": rounds,
    }


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def write_lineage(ctx) -> Path:
    return write_json_atomic(build_lineage(ctx), ctx.run / LINEAGE_NAME)


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


def read_lineage(run: Path) -> dict:
    path = Path(run) / LINEAGE_NAME
    if not path.is_file():
        if not Path(run).is_dir():
            raise EvoqError(f"run folder not found: {run}")
        raise EvoqError(f"{run} has no {LINEAGE_NAME}: not an evoq-train evolve run folder "
                        "(or no step has finished yet)")
    return read_manifest(path, "lineage")
