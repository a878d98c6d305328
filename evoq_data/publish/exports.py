"""The extra configs of ``evoq-data push --export``: datasets other research trains on.

- ``dpo``: TRL's conversational preference format for vision-language models (``prompt``,
  ``chosen``, ``rejected`` as chat turns and ``images`` in shown order; what
  ``trl.DPOTrainer`` reads). The prompt is evoq's compare prompt without the reasoning
  suffix; chosen is the majority's answer (``0`` = the first shown image, ``1`` = the
  second), rejected the other; each pair gives one row per shown order (a then b, b then a).
  Pairs without a majority (a tie or no valid vote) are left out, and so are pairs below
  ``min_agreement`` when it is set.
- ``reasoning_dpo``: from the raw votes, per pair and shown order, ``chosen`` is a sampled
  answer that agrees with the pair's majority and ``rejected`` one that disagrees, reasoning
  text and all, under the prompt the votes were made with. Up to ``reasoning_samples`` rows
  per pair and order (answers drawn without replacement, seeded); an order without a
  disagreeing (or agreeing) valid vote gives no row and is counted.
- ``pseudo_mos``: one row per image (:mod:`evoq_data.publish.pseudo_mos`).

``dpo`` and ``reasoning_dpo`` embed their images (the trainer needs them in the row), so they
need a layout that reads the images (``embed`` or ``once``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from evoq_data.core.errors import EvoqError
from evoq_data.core.schemas import check_columns
from evoq_data.generation.prompts import compare_prompt

log = logging.getLogger(__name__)

EXPORTS = ("dpo", "reasoning_dpo", "pseudo_mos")
VOTE_COLUMNS = ("pair_id", "vote_index", "swapped", "raw_text", "winner_id", "parse_status",
                "prompt_sha256")
ROWS_PER_TABLE = 256  # rows built (and images read) at a time


@dataclass(frozen=True)
class ExportOptions:
    """What ``--export`` asked for and the settings of the pair exports."""

    configs: tuple[str, ...] = ()
    min_agreement: float | None = None  # dpo and reasoning_dpo: leave out pairs below it
    reasoning_samples: int = 1  # reasoning_dpo: rows per pair and shown order, at most
    seed: int = 0  # reasoning_dpo: which answers are drawn
    votes: Path | None = None  # reasoning_dpo: VOTES_DIR (default: the aggregate manifest's)


def parse_exports(value) -> ExportOptions | None:
    """``None``, ``"dpo,pseudo_mos"``, a list of names or :class:`ExportOptions` -> checked
    options (None when nothing is asked)."""
    if value is None:
        return None
    opts = value if isinstance(value, ExportOptions) else ExportOptions(
        configs=tuple(value.split(",")) if isinstance(value, str) else tuple(value))
    names = tuple(n.strip() for n in opts.configs if n.strip())
    unknown = [n for n in names if n not in EXPORTS]
    if unknown:
        raise EvoqError(f"unknown --export {', '.join(unknown)}: choose from {', '.join(EXPORTS)}")
    if len(set(names)) != len(names):
        raise EvoqError(f"--export names a config twice: {','.join(names)}")
    if opts.min_agreement is not None and not 0.5 <= opts.min_agreement <= 1:
        raise EvoqError(f"--export-min-agreement must be in [0.5, 1], got {opts.min_agreement}")
    if opts.reasoning_samples < 1:
        raise EvoqError(f"--reasoning-samples must be at least 1, got {opts.reasoning_samples}")
    if not names:
        return None
    return ExportOptions(configs=tuple(n for n in EXPORTS if n in names),
                         min_agreement=opts.min_agreement,
                         reasoning_samples=opts.reasoning_samples, seed=opts.seed,
                         votes=opts.votes)


# --- the rows ----------------------------------------------------------------------------

def majorities(prefs: pa.Table, min_agreement: float | None) -> tuple[list[dict], dict]:
    """Pairs with a majority (winner and loser ids) and the counts of those left out."""
    kept, ties, low = [], 0, 0
    cols = ("pair_id", "image_a_id", "image_b_id", "votes_a", "votes_b", "agreement", "p_star")
    for row in prefs.select(list(cols)).to_pylist():
        if row["votes_a"] == row["votes_b"]:
            ties += 1  # a tie, or no valid vote
            continue
        if min_agreement is not None and row["agreement"] < min_agreement:
            low += 1
            continue
        a_won = row["votes_a"] > row["votes_b"]
        row["winner"] = row["image_a_id"] if a_won else row["image_b_id"]
        kept.append(row)
    return kept, {"pairs": prefs.num_rows, "left_out_no_majority": ties,
                  "left_out_below_agreement": low, "min_agreement": min_agreement}


def _turns(prompt_text: str, chosen: str, rejected: str) -> dict:
    return {"prompt": [{"role": "user", "content": prompt_text}],
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}]}


def dpo_rows(pairs: list[dict]) -> list[dict]:
    """Two rows per pair (both shown orders); images as ids in shown order."""
    text = compare_prompt(False).text
    rows = []
    for p in pairs:
        for order, shown in (("ab", (p["image_a_id"], p["image_b_id"])),
                             ("ba", (p["image_b_id"], p["image_a_id"]))):
            best = str(shown.index(p["winner"]))
            rows.append({"pair_id": p["pair_id"], "shown_order": order, "image_ids": list(shown),
                         **_turns(text, best, "1" if best == "0" else "0"),
                         "agreement": p["agreement"], "p_star": p["p_star"]})
    return rows


def read_votes(votes_dir: Path, pair_ids: set[str],
               prompt_sha256: str) -> tuple[dict[tuple[str, bool], list[dict]], int]:
    """Valid votes of the given pairs made with the prompt, by (pair_id, swapped), in
    vote-index order; and how many valid votes of those pairs another prompt made (a mixed
    run: left out, since their answers belong to another prompt)."""
    files = sorted(votes_dir.glob("votes-*.parquet"))
    if not files:
        raise EvoqError(f"--export reasoning_dpo: no votes-*.parquet shards in {votes_dir}")
    out: dict[tuple[str, bool], list[dict]] = {}
    other = 0
    for f in files:
        check_columns(f, VOTE_COLUMNS, "votes")
        table = pq.read_table(f, columns=list(VOTE_COLUMNS))
        for v in table.to_pylist():
            if v["pair_id"] in pair_ids and v["parse_status"] == "ok" and v["winner_id"]:
                if v["prompt_sha256"] != prompt_sha256:
                    other += 1
                    continue
                out.setdefault((v["pair_id"], bool(v["swapped"])), []).append(v)
    for votes in out.values():
        votes.sort(key=lambda v: v["vote_index"])
    return out, other


def reasoning_rows(pairs: list[dict], votes, samples: int, seed: int,
                   prompt_text: str) -> tuple[list[dict], dict]:
    """Up to ``samples`` (agreeing, disagreeing) answer pairs per pair and shown order."""
    rng = np.random.default_rng(seed)
    rows, skipped_orders, pairs_without = [], 0, 0
    for p in pairs:
        made = 0
        for swapped in (False, True):
            cast = votes.get((p["pair_id"], swapped), [])
            agree = [v for v in cast if v["winner_id"] == p["winner"]]
            disagree = [v for v in cast if v["winner_id"] != p["winner"]]
            n = min(samples, len(agree), len(disagree))
            if n == 0:
                skipped_orders += 1
                continue
            good = rng.choice(len(agree), n, replace=False)
            bad = rng.choice(len(disagree), n, replace=False)
            shown = [p["image_b_id"], p["image_a_id"]] if swapped else [p["image_a_id"],
                                                                       p["image_b_id"]]
            for g, b in zip(good, bad, strict=True):
                chosen, rejected = agree[int(g)], disagree[int(b)]
                rows.append({"pair_id": p["pair_id"], "shown_order": "ba" if swapped else "ab",
                             "image_ids": shown,
                             **_turns(prompt_text, chosen["raw_text"], rejected["raw_text"]),
                             "chosen_vote_index": chosen["vote_index"],
                             "rejected_vote_index": rejected["vote_index"],
                             "agreement": p["agreement"], "p_star": p["p_star"]})
                made += 1
        pairs_without += made == 0
    return rows, {"orders_skipped_no_disagreeing_vote": skipped_orders,
                  "pairs_skipped_no_disagreeing_vote": pairs_without,
                  "samples_per_order": samples, "seed": seed}


# --- writing -----------------------------------------------------------------------------

def _features(reasoning: bool):
    import datasets

    turn = [{"role": datasets.Value("string"), "content": datasets.Value("string")}]
    cols = {"pair_id": datasets.Value("string"), "shown_order": datasets.Value("string"),
            "image_ids": [datasets.Value("string")], "images": [datasets.Image()],
            "prompt": turn, "chosen": turn, "rejected": turn}
    if reasoning:
        cols |= {"chosen_vote_index": datasets.Value("int32"),
                 "rejected_vote_index": datasets.Value("int32")}
    cols |= {"agreement": datasets.Value("float64"), "p_star": datasets.Value("float64")}
    return datasets.Features(cols)


def _write_pair_rows(name: str, rows: list[dict], files: dict[str, Path], folder: Path,
                     reasoning: bool) -> dict:
    from evoq_data.publish.tables import SHARD_BYTES, image_struct, write_config

    schema = _features(reasoning).arrow_schema
    sizes = {i: p.stat().st_size for i, p in files.items()}
    total = sum(sizes[i] for r in rows for i in r["image_ids"])
    per_shard = max(1, -(-len(rows) // max(1, -(-total // SHARD_BYTES))))

    def tables(start: int, stop: int):
        for s in range(start, stop, ROWS_PER_TABLE):
            part = rows[s:min(stop, s + ROWS_PER_TABLE)]
            cache: dict[str, dict] = {}
            built = [{**r, "images": [cache.setdefault(i, image_struct(i, files[i]))
                                      for i in r["image_ids"]]} for r in part]
            yield pa.Table.from_pylist(built, schema=schema)

    starts = list(range(0, len(rows), per_shard)) or [0]
    shards = [lambda s=s: tables(s, min(len(rows), s + per_shard)) if rows
              else iter([pa.Table.from_pylist([], schema=schema)]) for s in starts]
    conf = write_config(name, shards, folder, 100)
    conf["image_bytes"] = total
    return conf


def votes_dir_of(src: dict, opts: ExportOptions) -> Path:
    named = str(opts.votes or src["manifest"].get("votes_dir") or "")
    if not named or not Path(named).is_dir():
        raise EvoqError("--export reasoning_dpo: the votes folder "
                        f"{named or '(not named by the aggregate manifest)'} is not there; "
                        "pass --votes VOTES_DIR")
    return Path(named)


def vote_prompt(src: dict):
    """The compare prompt the raw votes were made with (checked by its sha256)."""
    votes = src["manifest"].get("votes") or {}
    for reasoning in (True, False):
        prompt = compare_prompt(reasoning)
        if votes.get("prompt_sha256") == prompt.sha256:
            return prompt
    raise EvoqError("--export reasoning_dpo: the votes were not made with evoq's compare prompt "
                    f"(prompt {votes.get('prompt_id')!r}, sha256 {votes.get('prompt_sha256')}); "
                    "their answers cannot be paired with a prompt")


def write_exports(src: dict, folder: Path, opts: ExportOptions, *, layout: str,
                  files: dict[str, Path], keep, configs: dict) -> dict:
    """Write the asked configs into ``folder`` (adding them to ``configs``); return the
    summary that evoq.json, the card and the push summary show."""
    summary: dict = {}
    pair_exports = [n for n in opts.configs if n != "pseudo_mos"]
    if pair_exports and layout == "none":
        raise EvoqError(f"--export {','.join(pair_exports)} embeds the images TRL trains on; "
                        "it needs --images embed or once, not none")
    if pair_exports:
        pairs, counts = majorities(src["preferences"], opts.min_agreement)
    if "dpo" in opts.configs:
        rows = dpo_rows(pairs)
        configs["dpo"] = _write_pair_rows("dpo", rows, files, folder, reasoning=False)
        summary["dpo"] = {**counts, "pairs_used": len(pairs), "rows": len(rows)}
    if "reasoning_dpo" in opts.configs:
        prompt = vote_prompt(src)
        votes, other = read_votes(votes_dir_of(src, opts), {p["pair_id"] for p in pairs},
                                  prompt.sha256)
        rows, skipped = reasoning_rows(pairs, votes, opts.reasoning_samples, opts.seed,
                                       prompt.text)
        skipped["votes_left_out_other_prompt"] = other
        configs["reasoning_dpo"] = _write_pair_rows("reasoning_dpo", rows, files, folder,
                                                    reasoning=True)
        summary["reasoning_dpo"] = {**counts, **skipped, "prompt_id": prompt.prompt_id,
                                    "pairs_used": len({r["pair_id"] for r in rows}),
                                    "rows": len(rows)}
        if skipped["pairs_skipped_no_disagreeing_vote"]:
            log.info("reasoning_dpo: %d pair(s) have no disagreeing vote in either order and "
                     "give no row", skipped["pairs_skipped_no_disagreeing_vote"])
    if "pseudo_mos" in opts.configs:
        from evoq_data.publish.pseudo_mos import write_pseudo_mos

        configs["pseudo_mos"], summary["pseudo_mos"] = write_pseudo_mos(
            src, folder, layout=layout, files=files, keep=keep)
    return summary


# The column descriptions of the export configs (the card and docs/push.md render them with
# the others, from evoq_data.publish.card.COLUMN_DOCS).
_TRL = "TRL's conversational preference format: "
EXPORT_COLUMN_DOCS = {
    "dpo": {
        "pair_id": "the pair (from `evoq-data pairs`)",
        "shown_order": "`ab`: image a shown first, `ba`: image b first (each pair gives both)",
        "image_ids": "sha256 of each image, in shown order",
        "images": "the two images in shown order (`datasets.Image`, embedded bytes)",
        "prompt": _TRL + "one user turn, the compare prompt without the reasoning suffix "
                  "(TRL puts the images before it)",
        "chosen": _TRL + "one assistant turn, the majority's answer (`0` = first shown image)",
        "rejected": _TRL + "one assistant turn, the other answer",
        "agreement, p_star": "the pair's agreement and p* (as in `preferences`)",
    },
    "reasoning_dpo": {
        "pair_id, shown_order, image_ids, images": "as in `dpo`",
        "prompt": _TRL + "one user turn, the compare prompt the votes were made with",
        "chosen": _TRL + "one assistant turn, a sampled raw answer that agrees with the "
                  "majority (reasoning text kept, verbatim)",
        "rejected": _TRL + "one assistant turn, a sampled raw answer of the same shown order "
                    "that disagrees",
        "chosen_vote_index, rejected_vote_index": "which votes (`vote_index` in `votes`)",
        "agreement, p_star": "the pair's agreement and p* (as in `preferences`)",
    },
    "pseudo_mos": {
        "image_id": "sha256 of the image file's bytes",
        "image": "the image (`datasets.Image`; only with `--images embed`; with `once` it is "
                 "in `images`)",
        "image_path": "as in `images`",
        "pseudo_mos": "1 + 4 * sigmoid(bt_score): the 1–5 scale of the score prompt; null for "
                      "an image with no decisive comparison",
        "pseudo_mos_low, pseudo_mos_high": "the 95% interval of bt_score on the same scale",
        "bt_score": "Bradley–Terry log-strength (as in `images`)",
        "bt_low, bt_high, bt_se": "its 95% Laplace interval (bt_score ± 1.959964 bt_se) and "
                                  "standard error, from the Hessian of the penalised fit",
        "comparisons": "pairs with at least one valid vote (as in `images`)",
        "decisive_comparisons": "the pairs with a majority that the fit used",
    },
}
