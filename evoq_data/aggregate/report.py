"""The reporting side of ``evoq-data aggregate``: stats.json's dictionary, stats.md and the
two PNG plots.

stats.md and the plots read only the statistics dictionary written to stats.json, so a card
or a notebook can redraw them from that file alone.
"""

from __future__ import annotations

from pathlib import Path


def _pct(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}%"


def _num(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def build_stats(*, label: str, stats_all: dict, stats_kept: dict, hist: list[dict],
                bias: dict, parse_status: dict, removed: list[dict],
                min_agreement: float | None, min_valid_votes: int | None, n_images: int,
                bt_info: dict, triads: int, groups: list[dict], mixed: bool,
                vote_manifest: dict, completeness: dict, stopping: list[dict],
                stopped_soft: bool = False) -> dict:
    """The stats.json dictionary from the rows of the sql/ statistics queries
    (``stopping``: the rows of sql/summarize_stopping.sql)."""
    total_votes = int(stats_all["votes"])
    planned = sum(int(r["votes_planned"]) for r in stopping)
    used = sum(int(r["votes_used"]) for r in stopping)
    saved = sum(int(r["votes_saved"]) for r in stopping)
    invalid = int(stats_all["invalid_votes"])
    judged = int(stats_all["pairs"]) - int(stats_all["pairs_without_valid_votes"])
    return {
        "label": label,
        "mode": vote_manifest.get("mode") or "sample",
        "votes": {
            "total": total_votes, "valid": int(stats_all["valid_votes"]), "invalid": invalid,
            "invalid_rate": invalid / total_votes if total_votes else None,
            "by_parse_status": parse_status,
        },
        "pairs": {
            "total": int(stats_all["pairs"]), "kept": int(stats_kept["pairs"]),
            "filtered_out": int(stats_all["pairs"]) - int(stats_kept["pairs"]),
            "without_valid_votes": int(stats_all["pairs_without_valid_votes"]),
            "ties": int(stats_all["ties"]), "decisive": int(stats_all["decisive_pairs"]),
            "tie_rate": stats_all["ties"] / judged if judged else None,
            "kept_ties": int(stats_kept["ties"]),
            "kept_decisive": int(stats_kept["decisive_pairs"]),
        },
        "agreement": {
            "mean": stats_all["agreement_mean"],
            "quantiles": {q: stats_all[f"agreement_{q}"]
                          for q in ("p10", "p25", "median", "p75", "p90")},
            "kept_mean": stats_kept["agreement_mean"],
            "histogram": [{"low": h["bin_low"], "high": h["bin_high"], "pairs": h["pairs"]}
                          for h in hist],
        },
        "position_bias": {k: bias[k] for k in ("first_shown_votes", "valid_votes",
                                               "share_first_shown", "wilson_low",
                                               "wilson_high")},
        "filters": {"min_agreement": min_agreement, "min_valid_votes": min_valid_votes,
                    "removed": [{"reason": r["reason"], "pairs": r["pairs"],
                                 "votes": r["votes"]} for r in removed]},
        "images": {"images": int(n_images),
                   "with_decisive_comparisons": bt_info["items"],
                   "decisive_comparisons": bt_info["comparisons"],
                   "intransitive_triads": int(triads), "bradley_terry": bt_info},
        "provenance": {"mixed": mixed, "runs": groups,
                       "seed": vote_manifest.get("seed"),
                       "votes_per_pair": vote_manifest.get("votes_per_pair"),
                       "order": vote_manifest.get("order"),
                       "reasoning": vote_manifest.get("reasoning")},
        "completeness": completeness,
        "stopping": {
            "mode": vote_manifest.get("mode") or "sample",
            "stop": vote_manifest.get("stop") or "fixed",
            "votes_per_pair": vote_manifest.get("votes_per_pair"),
            "votes_planned": planned, "votes_used": used, "votes_saved": saved,
            "saved_fraction": saved / planned if planned else None,
            "pairs_by_stop_reason": {r["stop_reason"]: int(r["pairs"]) for r in stopping},
            # soft labels over the votes a stopped pair used, not K (--allow-stopped-soft)
            "soft_labels_from_stopped_votes": stopped_soft,
        },
    }


def import_pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (imported only to plot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_plots(stats: dict, out: str | Path) -> list[Path]:
    """agreement_hist.png and position_bias.png in ``out``."""
    plt = import_pyplot()
    out = Path(out)
    hist = stats["agreement"]["histogram"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    lows = [h["low"] for h in hist]
    width = hist[0]["high"] - hist[0]["low"] if hist else 0.05
    ax.bar(lows, [h["pairs"] for h in hist], width=width, align="edge",
           color="#4c72b0", edgecolor="white")
    ax.set_xlim(0.5, 1.0)
    ax.set_xlabel("agreement (majority share of valid votes)")
    ax.set_ylabel("pairs")
    p = stats["pairs"]
    ax.set_title(f"Agreement of {p['total'] - p['without_valid_votes']} pairs "
                 f"(ties {_pct(p['tie_rate'])}, no valid vote: {p['without_valid_votes']})",
                 fontsize=9)
    fig.tight_layout()
    hist_path = out / "agreement_hist.png"
    fig.savefig(hist_path, dpi=110)
    plt.close(fig)

    bias = stats["position_bias"]
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    share = bias["share_first_shown"]
    if share is not None:
        shares = [share, 1 - share]
        lo, hi = bias["wilson_low"], bias["wilson_high"]
        errs = [[share - lo, (1 - share) - (1 - hi)], [hi - share, (1 - lo) - (1 - share)]]
        ax.bar(["first shown", "second shown"], shares, yerr=errs, capsize=6,
               color=["#dd8452", "#55a868"])
    ax.axhline(0.5, color="black", linestyle="--", linewidth=1, label="no bias")
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of valid votes")
    ax.set_title(f"Position bias: {_pct(share, 2)} first shown\n95% CI "
                 f"[{_pct(bias['wilson_low'], 2)}, {_pct(bias['wilson_high'], 2)}], "
                 f"n={bias['valid_votes']}", fontsize=9)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    bias_path = out / "position_bias.png"
    fig.savefig(bias_path, dpi=110)
    plt.close(fig)
    return [hist_path, bias_path]


def _label_text(stats: dict) -> str:
    if stats.get("mode") == "logprob":
        return ("(from the judge's probabilities, --mode logprob: P(a better) is the mean over "
                "the two shown orders of the probability given to image a; "
                + ("p* = 1 / 0 / 0.5 by P against 0.5)." if stats["label"] == "hard"
                   else "p* = P)."))
    return ("(paper Eq. 1: 1 / 0 / 0.5 by majority)." if stats["label"] == "hard"
            else "(vote fraction for image a).")


def _completeness_md(c: dict) -> list[str]:
    lines = ["## Completeness", ""]
    if c["checked_against_pairs_file"]:
        lines.append(f"- pairs in the pairs file: {c['pairs_listed']}, without any vote: "
                     f"{c['pairs_missing']}")
    else:
        lines.append("- **not checked against the pairs file** (none was available; "
                     "--allow-incomplete): pairs that were never voted are not counted")
    lines.append(f"- voted pairs missing votes: {c['pairs_incomplete']}; votes missing in all: "
                 f"{c['votes_missing']}")
    if c["complete"]:
        lines.append("- every pair has all its votes")
    elif c["complete"] is False:
        lines.append("- **incomplete votes aggregated (--allow-incomplete)**: these labels "
                     "cover fewer pairs or fewer votes than the run planned")
    return lines + [""]


def _stopping_md(s: dict) -> list[str]:
    lines = ["## Votes asked", "",
             f"Mode {s['mode']}, stop {s['stop']}, K = {s['votes_per_pair']}: "
             f"{s['votes_used']} votes used of {s['votes_planned']} planned, "
             f"{s['votes_saved']} saved ({_pct(s['saved_fraction'])}).", "",
             "| stop reason | pairs |", "|---|---:|"]
    lines += [f"| {reason} | {n} |" for reason, n in s["pairs_by_stop_reason"].items()]
    return lines + [""]


STOPPED_SOFT_MD = [
    "**Soft labels from stopped votes** (`--allow-stopped-soft`): the votes were asked with "
    "adaptive stopping, so a pair that stopped early has p* = its vote fraction over the "
    "votes it used, fewer than K; it differs from the fraction all K votes would have given.",
    "",
]


def render_stats_md(stats: dict) -> str:
    """stats.md: the statistics a reader needs to judge the pseudo-labels."""
    v, p, a, b = stats["votes"], stats["pairs"], stats["agreement"], stats["position_bias"]
    img, f = stats["images"], stats["filters"]
    lines = [
        "# Pseudo-preference statistics",
        "",
        f"Label mode: **{stats['label']}** " + _label_text(stats),
        "",
        *STOPPED_SOFT_MD * bool(stats["stopping"].get("soft_labels_from_stopped_votes")),
        "## Votes",
        "",
        "| | count | share |",
        "|---|---:|---:|",
        f"| votes | {v['total']} | |",
        f"| valid | {v['valid']} | {_pct(v['valid'] / v['total'] if v['total'] else None)} |",
        f"| invalid (parse failures) | {v['invalid']} | {_pct(v['invalid_rate'])} |",
    ]
    for status, n in sorted(v["by_parse_status"].items(), key=lambda kv: -kv[1]):
        lines.append(f"| parse_status `{status}` | {n} | {_pct(n / v['total'])} |")
    lines += [
        "",
        "## Pairs",
        "",
        f"- pairs: {p['total']}, kept: {p['kept']}, filtered out: {p['filtered_out']}",
        f"- without any valid vote (p* null): {p['without_valid_votes']}",
        f"- ties (p* = 0.5 under hard labels): {p['ties']} "
        f"({_pct(p['tie_rate'])} of pairs with valid votes); decisive: {p['decisive']}",
        "",
        "## Agreement (majority share of valid votes, all pairs)",
        "",
        f"- mean {_num(a['mean'])}; "
        + ", ".join(f"{q} {_num(x)}" for q, x in a["quantiles"].items()),
        f"- mean over kept pairs: {_num(a['kept_mean'])}",
        "",
        "| agreement | pairs |",
        "|---|---:|",
    ]
    lines += [f"| [{h['low']:.2f}, {h['high']:.2f}{']' if h['high'] >= 1 else ')'} "
              f"| {h['pairs']} |" for h in a["histogram"]]
    lines += [
        "",
        "![agreement](agreement_hist.png)",
        "",
        "## Position bias",
        "",
        f"Share of valid votes for the first-shown image: {_pct(b['share_first_shown'], 2)} "
        f"(95% Wilson interval {_pct(b['wilson_low'], 2)} to {_pct(b['wilson_high'], 2)}, "
        f"{b['first_shown_votes']} of {b['valid_votes']}). 50% means no bias.",
        "",
        "![position bias](position_bias.png)",
        "",
        "## Filters",
        "",
        f"- min_agreement: {f['min_agreement']}, min_valid_votes: {f['min_valid_votes']}",
    ]
    lines += [f"- removed for `{r['reason']}`: {r['pairs']} pairs ({r['votes']} votes)"
              for r in f["removed"]] or ["- nothing removed"]
    bt = img["bradley_terry"]
    lines += [
        "",
        "## Images",
        "",
        f"- images in kept pairs: {img['images']}, with a decisive comparison: "
        f"{img['with_decisive_comparisons']}",
        f"- decisive comparisons: {img['decisive_comparisons']}; intransitive triads "
        f"(A>B, B>C, C>A): {img['intransitive_triads']}",
        f"- Bradley-Terry: L2 penalty alpha={bt['alpha']}, converged={bt['converged']}, "
        f"iterations={bt['iterations']}, log-likelihood={_num(bt['log_likelihood'])}",
        "",
    ]
    lines += _completeness_md(stats["completeness"]) + _stopping_md(stats["stopping"])
    lines += [
        "## Provenance",
        "",
        "| model | revision | engine | prompt sha256 | temperature | top_p | max_tokens "
        "| votes | seeds |",
        "|---|---|---|---|---:|---:|---:|---:|---|",
    ]
    pv = stats["provenance"]
    lines += [f"| {r['model']} | {r['model_revision']} | {r['engine']} | "
              f"`{str(r['prompt_sha256'])[:16]}` | {r['temperature']} | {r['top_p']} | "
              f"{r['max_tokens']} | {r['votes']} | {r['seed_min']}..{r['seed_max']} |"
              for r in pv["runs"]]
    lines += [
        "",
        f"Run seed {pv['seed']}, votes per pair {pv['votes_per_pair']}, order "
        f"{pv['order']}, reasoning {pv['reasoning']}"
        + (" — **mixed provenance (--allow-mixed)**" if pv["mixed"] else ""),
        "",
    ]
    return "\n".join(lines)
