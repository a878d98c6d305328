"""The dataset card of a published version: YAML metadata plus cards/dataset_card.md.j2.

Everything the card says comes from the files the earlier stages wrote (the aggregate
manifest with the vote run's manifest inside it, stats.json / stats.md, the pairs manifest),
so a reader can judge the pseudo-labels: the model, the prompt verbatim, the sampling, the
seeds, the agreement and position-bias statistics, and the data's content hash. No token or
credential ever reaches it.
"""

from __future__ import annotations

import re

from evoq_data.core.cards import render_template
from evoq_data.publish.exports import EXPORT_COLUMN_DOCS

TEMPLATE = "dataset_card.md.j2"
TAGS = ["image-quality-assessment", "pseudo-labels", "preference", "evoquality", "evoq"]
TASK_CATEGORIES = ["image-classification", "image-text-to-text"]

CITATION = """@inproceedings{wen2026evoquality,
  title     = {Self-Evolving Vision-Language Models for Image Quality Assessment via Voting and Ranking},
  author    = {Wen and others},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year      = {2026},
  eprint    = {2509.25787},
  archivePrefix = {arXiv},
  url       = {https://arxiv.org/abs/2509.25787}
}"""

# The one description of every published column: the card renders it, docs/push.md holds
# the table :func:`column_docs_markdown` makes of it, and a test checks both, and checks the
# formulas against docs/aggregate.md's tables. A key naming several columns describes each.
PATH_DOCS = {
    False: "path of the file relative to the pool folder (the pool is named in the card); "
           "the local absolute paths are published only with `push --keep-local-paths`",
    True: "absolute path of the file on the machine that voted (`push --keep-local-paths`)",
    "file_names": "file name of the image (its folder is not published: the images share "
                  "no declared pool folder); the image id identifies it",
}
COLUMN_DOCS = {
    "preferences": {
        "pair_id": "stable id of the unordered pair (from `evoq-data pairs`)",
        "image_a, image_b": "the two images (`datasets.Image`, embedded bytes; only with "
                            "`--images embed`)",
        "image_a_id, image_b_id": "sha256 of each image file's bytes",
        "image_a_path, image_b_path": PATH_DOCS[False],
        "votes_a, votes_b": "valid votes for image a / image b",
        "invalid_votes": "votes whose answer could not be parsed (any parse_status but `ok`)",
        "total_votes": "votes_a + votes_b + invalid_votes",
        "p_star": "hard: 1 if votes_a > votes_b, 0 if fewer, 0.5 on a tie; soft: votes_a / "
                  "(votes_a + votes_b); null when no valid vote",
        "vote_fraction_a": "votes_a / valid votes (null without valid votes)",
        "agreement": "max(votes_a, votes_b) / valid votes, in [0.5, 1] (null without valid "
                     "votes)",
        "wilson_low, wilson_high": "95% Wilson score interval of the majority share "
                                   "(z = 1.959963984540054)",
        "votes_first_shown": "valid votes that chose whichever image was shown first "
                             "(answer = 0)",
    },
    "images": {
        "image_id": "sha256 of the image file's bytes",
        "image": "the image (`datasets.Image`, embedded bytes, once per image; only with "
                 "`--images embed` or `once`)",
        "image_path": PATH_DOCS[False],
        "wins, losses, ties": "kept pairs the image won / lost / tied by majority of valid "
                              "votes (a pair is one comparison, whatever the label mode)",
        "comparisons": "wins + losses + ties (pairs with at least one valid vote)",
        "win_rate": "(wins + ties / 2) / comparisons, i.e. the image's mean hard p*; null "
                    "without comparisons",
        "bt_score": "Bradley–Terry log-strength, centred over the scored images; null for an "
                    "image with no decisive comparison",
    },
    "votes": {
        "pair_id, vote_index": "the pair and the index of the vote (0 .. K-1)",
        "image_a_id, image_b_id": "sha256 of each image file's bytes",
        "image_a_path, image_b_path": PATH_DOCS[False],
        "swapped": "true when image b was shown first",
        "raw_text": "the judge's answer, verbatim",
        "answer": "0 = the first shown image is better, 1 = the second; null when invalid",
        "winner_id": "image id of the better image; null when invalid",
        "parse_status": "`ok` or why the answer is invalid",
        "model, model_revision, engine": "the judge (a local model folder by its name)",
        "prompt_id, prompt_sha256": "the comparison prompt",
        "temperature, top_p, max_tokens, seed": "the sampling of this vote (seed null in logprob mode)",
        "votes_planned": "K, the votes the pair could have had",
        "stop_reason": "`fixed` (all K asked), or why an adaptive run stopped: `decided`, `confident`, `exhausted`",
        "prob_0, prob_1": "logprob mode only: P(answer 0) and P(answer 1), renormalised over the two; null otherwise",
        "created_at, evoq_version": "when and by which evoq the vote was made",
    },
}


COLUMN_DOCS.update(EXPORT_COLUMN_DOCS)  # dpo, reasoning_dpo, pseudo_mos (--export)


def column_docs(local_paths: bool | str = False, configs=("preferences", "images", "votes"),
                embed_images: bool | str = True) -> dict:
    """COLUMN_DOCS for a push: the path columns described as published, the image columns
    only in the layouts (``embed_images``: a layout name, or True = embed, False = none)
    that publish them."""
    layout = embed_images if isinstance(embed_images, str) else \
        "embed" if embed_images else "none"

    def shown(doc: str) -> bool:
        if "only with `--images embed` or `once`" in doc:
            return layout != "none"
        return "only with `--images embed`" not in doc or layout == "embed"

    return {config: {name: PATH_DOCS[local_paths] if doc == PATH_DOCS[False] else doc
                     for name, doc in COLUMN_DOCS[config].items() if shown(doc)}
            for config in configs}


def _path_kind(paths: dict) -> bool | str:
    """The PATH_DOCS key of evoq.json's ``paths``."""
    return "file_names" if paths.get("file_names") else bool(paths.get("local", False))


def column_docs_markdown() -> str:
    """The column tables of docs/push.md (a test keeps the page equal to this)."""
    out = []
    for config, docs in COLUMN_DOCS.items():
        out += [f"`{config}`:", "", "| column | meaning |", "|---|---|"]
        out += [f"| {name} | {doc} |" for name, doc in docs.items()]
        out.append("")
    return "\n".join(out)


def judge_of(votes: dict) -> dict:
    """Who voted, from the vote manifest: kind ('vlm', 'metric', 'import') and a phrase."""
    engine, model = votes.get("engine"), votes.get("model") or "unknown"
    if engine == "piqe":
        return {"kind": "metric", "text": "a classical metric (PIQE)"}
    if engine == "import":
        return {"kind": "import", "text": f"votes imported from `{model}`"}
    return {"kind": "vlm", "text": f"the vision-language model `{model}`"}


def _demote(markdown: str, levels: int = 2) -> str:
    """Nest stats.md under the card's own headings and point its plots into assets/."""
    out = re.sub(r"^(#+) ", lambda m: "#" * (len(m[1]) + levels) + " ", markdown, flags=re.M)
    return re.sub(r"\]\(([\w.-]+\.png)\)", r"](assets/\1)", out)


def _human(n: int) -> str:
    size = float(n)
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} bytes"


def render_card(meta: dict, *, stats_md: str, plots: list[str], size_category: str) -> str:
    """Render README.md (YAML + body) for one dataset version."""
    from huggingface_hub import DatasetCard, DatasetCardData

    configs = [
        {"config_name": name, "data_files": [{"split": "train", "path": conf["pattern"]}],
         **({"default": True} if name == "preferences" else {})}
        for name, conf in meta["configs"].items()
    ]
    votes = meta["aggregate"].get("votes", {})
    pretty = meta["repo_id"].split("/")[-1]
    data = DatasetCardData(
        license=meta["license"], pretty_name=pretty, task_categories=TASK_CATEGORIES,
        tags=TAGS, size_categories=[size_category], configs=configs,
    )
    stats_body = _demote(stats_md) if stats_md.strip() else ""
    missing_plots = [p for p in plots if p not in stats_body]
    text = render_template(
        TEMPLATE, strict=False, card_data=data.to_yaml(), meta=meta, votes=votes,
        aggregate=meta["aggregate"], pairs=meta.get("pairs") or {},
        stats=meta.get("stats") or {}, stats_md=stats_body, plots=missing_plots,
        column_docs=column_docs(_path_kind(meta.get("paths", {})),
                                [c for c in COLUMN_DOCS if c in meta["configs"]],
                                meta.get("images") or meta["embed_images"]),
        judge=judge_of(votes), citation=CITATION, pretty_name=pretty,
        filters={k: "none" if v is None else v
                 for k, v in (meta["aggregate"].get("filters") or {
                     "min_agreement": None, "min_valid_votes": None}).items()},
        sizes={k: _human(v) for k, v in meta["image_bytes"].items()},
    )
    return str(DatasetCard(text))  # the Hub's own serialisation of the YAML header
