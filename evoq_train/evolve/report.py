"""The rounds report: ``RUN/report.md`` and ``RUN/report.png``.

Per round: pairs, votes, invalid-vote rate, mean agreement, position bias (share of valid votes
for the first-shown image) from the round's ``prefs/stats.json``; the training reward and the
parse-failure rate at the last logged step of GRPO; SRCC and PLCC (raw) per ``--eval`` set and
their weighted average, with round 0 for the base model; with ``--pool-labels``, the accuracy
of the round's pseudo-labels against those labels, overall and by agreement bin (measured by
the round's ``label-accuracy`` step; nothing trains on it). A value that is not there yet (or
was never logged) is shown as ``—``, never guessed.
"""

from __future__ import annotations

import ast
import math
from pathlib import Path

from evoq_data.core.errors import EvoqError
from evoq_data.core.io import atomic_path, read_json, write_text_atomic

from ..trainer import LINEAGE_FILE
from .context import RunContext
from .layout import REPORT_PNG


def _float(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def training_end(model_dir: Path, log: Path) -> dict:
    """Reward and parse-failure rate of the last logged training step: from the last
    checkpoint's trainer_state.json when it covers the end, else from the trainer's log
    lines (the dicts transformers prints) in the step's log file."""
    entries, source = [], None
    ckpts = sorted(model_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1])
                   if p.name.split("-")[-1].isdigit() else -1)
    final = (read_json(model_dir / LINEAGE_FILE, "training lineage", missing_ok=True)
             or {}).get("global_steps")
    if ckpts:
        try:
            state = read_json(ckpts[-1] / "trainer_state.json", "trainer state")
        except EvoqError:
            state = {}  # a checkpoint cut short: the log lines below tell the end
        if state and (final is None or state.get("global_step") == final):
            entries, source = state.get("log_history", []), "trainer_state.json"
    if not entries and log.is_file():
        for line in log.read_text(errors="replace").splitlines():
            line = line.strip()
            if line.startswith("{'") and "reward" in line:
                try:
                    entries.append(ast.literal_eval(line))
                except (ValueError, SyntaxError):
                    continue
        source = "log"
    logged = [e for e in entries if isinstance(e, dict) and "reward" in e]
    if not logged:
        return {"reward": None, "parse_failure_rate": None, "step": None, "source": None}
    last = logged[-1]
    return {"reward": _float(last.get("reward")),
            "parse_failure_rate": _float(last.get("parse_failure_rate")),
            "step": last.get("step"), "source": source}


def collect(ctx: RunContext) -> list[dict]:
    """One row per round (round 0: the base model, evaluated only)."""
    s, state = ctx.settings, ctx.require_state()
    rows = []
    first = 0 if s.evals and s.eval_base else 1
    for r in range(first, ctx.rounds_held + 1):
        rl = ctx.layout.round(r)
        row: dict = {"round": r, "voted_by": None, "pairs": None, "votes": None,
                     "invalid_rate": None, "agreement": None, "position_bias": None,
                     "reward": None, "parse_failure_rate": None, "eval": {},
                     "label_accuracy": None, "label_note": None}
        if r >= 1:
            row["voted_by"] = ctx.voter(r).role
            if state.done(rl.step("aggregate")):
                stats = read_json(ctx.layout.path(rl.prefs_stats), "aggregate statistics",
                                  missing_ok=True) or {}
                row["pairs"] = (stats.get("pairs") or {}).get("total")
                votes = stats.get("votes") or {}
                row["votes"], row["invalid_rate"] = votes.get("total"), votes.get("invalid_rate")
                row["agreement"] = (stats.get("agreement") or {}).get("mean")
                row["position_bias"] = (stats.get("position_bias") or {}).get("share_first_shown")
            measured = state.summary(rl.step("label-accuracy"))
            row["label_accuracy"] = measured.get("label_accuracy")
            row["label_note"] = measured.get("skipped")
            end = state.summary(rl.step("grpo")).get("train_end") or {}
            row["reward"], row["parse_failure_rate"] = end.get("reward"), \
                end.get("parse_failure_rate")
        ev = state.summary(rl.step("eval"))
        for name, m in (ev.get("benchmarks") or {}).items():
            row["eval"][name] = {"srcc": m.get("srcc"), "plcc": m.get("plcc"),
                                 "note": m.get("undefined")}
        for name, reason in (ev.get("skipped") or {}).items():
            row["eval"][name] = {"srcc": None, "plcc": None, "note": reason}
        if ev.get("wavg") and len(ev.get("benchmarks") or {}) > 1:
            row["eval"]["WAVG"] = {"srcc": ev["wavg"].get("srcc"), "plcc": ev["wavg"].get("plcc")}
        rows.append(row)
    return rows


def _fmt(v, pct: bool = False) -> str:
    if v is None:
        return "—"
    if isinstance(v, int):
        return f"{v:,}"
    return f"{100 * v:.1f} %" if pct else f"{v:.3f}"


def agreement_bins(rows: list[dict]) -> list[str]:
    """The agreement bins of the rounds' label accuracy, in the order of ``eval --prefs``."""
    from evoq_data.evaluate.accuracy import BUCKETS, bucket_of

    order = [bucket_of(lo) for lo, _ in BUCKETS]
    found = {b for row in rows for b in ((row["label_accuracy"] or {}).get("by_agreement")
                                         or {})}
    return [b for b in order if b in found] + sorted(found - set(order))


def _accuracy_cell(m: dict | None) -> str:
    if not m or m.get("accuracy") is None:
        return "—"
    return f"{_fmt(m['accuracy'], True)} ({m['correct']}/{m['decisive']})"


def label_accuracy_markdown(ctx: RunContext, rows: list[dict]) -> list[str]:
    """The per-round accuracy of the pseudo-labels against --pool-labels, by agreement bin."""
    voted = [row for row in rows if row["round"] >= 1]
    bins = agreement_bins(voted)
    head = ["round", "all decisive pairs", *[f"agreement {b}" for b in bins]]
    lines = ["", f"Pseudo-label accuracy against `--pool-labels` (`{ctx.sources.pool_labels}`): "
             "the share of decisive pairs (p* != 0.5) whose pseudo-label orders the two images "
             "as the labels do (correct/decisive), overall and by the pair's agreement. "
             "Measured only: no step trains on these labels.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in voted:
        acc = row["label_accuracy"] or {}
        by = acc.get("by_agreement") or {}
        lines.append("| " + " | ".join([str(row["round"]), _accuracy_cell(acc),
                                        *[_accuracy_cell(by.get(b)) for b in bins]]) + " |")
    notes = [f"- round {row['round']}: {row['label_note']}" for row in voted
             if row["label_note"]]
    if notes:
        lines += ["", "Not measured:", *notes]
    return lines


def render_markdown(ctx: RunContext, rows: list[dict], plot: str | None) -> str:
    s = ctx.settings
    labelled = bool(ctx.sources.pool_labels)
    names = sorted({n for row in rows for n in row["eval"]}, key=lambda n: (n == "WAVG", n))
    head = ["round", "voted by", "pairs", "votes", "invalid", "agreement", "first-shown share",
            *(["label accuracy"] if labelled else []), "reward (end)", "parse failures (end)"]
    for n in names:
        head += [f"{n} SRCC", f"{n} PLCC"]
    lines = [f"# evolve run `{ctx.layout.root.name}`", "",
             f"Base model `{ctx.sources.base_model}`, pool `{ctx.sources.pool}`, "
             f"{ctx.rounds_held} round(s) of {s.pairs_per_round:,} pairs x K = "
             f"{s.votes_per_pair} votes"
             + (f" (+ {s.synthetic_pairs:,} synthetic pairs from round 2)"
                if ctx.synthetic else "") + f", recipe `{s.train_config}`.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [str(row["round"]), row["voted_by"] or "(base model, not trained)",
                 _fmt(row["pairs"]), _fmt(row["votes"]), _fmt(row["invalid_rate"], True),
                 _fmt(row["agreement"]), _fmt(row["position_bias"], True),
                 *([_fmt((row["label_accuracy"] or {}).get("accuracy"), True)]
                   if labelled else []),
                 _fmt(row["reward"]), _fmt(row["parse_failure_rate"], True)]
        for n in names:
            m = row["eval"].get(n) or {}
            cells += [_fmt(m.get("srcc")), _fmt(m.get("plcc"))]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- round {row['round']}, {name}: {m['note']}" for row in rows
             for name, m in row["eval"].items() if m.get("note")]
    if notes:
        lines += ["", "No correlation (shown as —):", *notes]
    if labelled:
        lines += label_accuracy_markdown(ctx, rows)
    lines += ["", "invalid: share of votes without a readable answer; agreement: mean majority "
              "share of valid votes per pair; first-shown share: valid votes for the image shown "
              "first (0.5 = no position bias); "
              + ("label accuracy: the pseudo-labels against --pool-labels (above); "
                 if labelled else "") + "reward and parse failures: the last logged GRPO "
              "step; PLCC: raw Pearson (see each round's eval/metrics.md for the logistic one).",
              ""]
    if plot:
        lines += [f"![rounds]({plot})", ""]
    return "\n".join(lines)


def draw(rows: list[dict], path: Path, *, labelled: bool = False) -> Path:
    """The plot: votes, training, evaluation by round (and, ``labelled``: the pseudo-label
    accuracy against --pool-labels, overall and by agreement bin)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4 if labelled else 3, figsize=(17.5 if labelled else 13, 3.6))
    voted = [r for r in rows if r["round"] >= 1]
    x = [r["round"] for r in voted]
    for key, label in (("agreement", "agreement"), ("invalid_rate", "invalid rate"),
                       ("position_bias", "first-shown share")):
        axes[0].plot(x, [r[key] if r[key] is not None else math.nan for r in voted], "o-",
                     label=label)
    axes[0].set_title("votes")
    for key, label in (("reward", "reward (end)"), ("parse_failure_rate", "parse failures")):
        axes[1].plot(x, [r[key] if r[key] is not None else math.nan for r in voted], "o-",
                     label=label)
    axes[1].set_title("training")
    names = sorted({n for r in rows for n in r["eval"]})
    for n in names:
        xs = [r["round"] for r in rows]
        for metric, style in (("srcc", "o-"), ("plcc", "s--")):
            ys = [(r["eval"].get(n) or {}).get(metric) for r in rows]
            axes[2].plot(xs, [y if y is not None else math.nan for y in ys], style,
                         label=f"{n} {metric.upper()}")
    axes[2].set_title("evaluation (round 0 = base model)")
    if labelled:
        def accuracy(m: dict | None) -> float:
            value = (m or {}).get("accuracy")
            return value if value is not None else math.nan

        axes[3].plot(x, [accuracy(r["label_accuracy"]) for r in voted], "ko-", lw=2,
                     label="all decisive pairs")
        for b in agreement_bins(voted):
            axes[3].plot(x, [accuracy(((r["label_accuracy"] or {}).get("by_agreement")
                                       or {}).get(b)) for r in voted], ".--",
                         label=f"agreement {b}")
        axes[3].axhline(0.5, color="grey", lw=0.8)
        axes[3].set_ylim(0, 1.05)
        axes[3].set_title("pseudo-label accuracy (--pool-labels)")
    for ax in axes:
        ax.set_xlabel("round")
        ax.xaxis.get_major_locator().set_params(integer=True)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:  # whole or not at all, like every other output
            fig.savefig(tmp, dpi=100, format="png")
    finally:
        plt.close(fig)
    return path


def write_report(ctx: RunContext) -> tuple[Path, Path]:
    rows = collect(ctx)
    png = draw(rows, ctx.layout.report_png, labelled=bool(ctx.sources.pool_labels))
    md = write_text_atomic(render_markdown(ctx, rows, REPORT_PNG), ctx.layout.report_md)
    return md, png
