"""The dataset card of a published version: YAML metadata plus cards/dataset_card.md.j2.

Everything the card says comes from the files the earlier stages wrote (the aggregate
manifest with the vote run's manifest inside it, stats.json / stats.md, the pairs manifest),
so a reader can judge the pseudo-labels: the model, the prompt verbatim, the sampling, the
seeds, the agreement and position-bias statistics, and the data's content hash. No token or
credential ever reaches it.
"""

from __future__ import annotations

import re

from evoq_data.core.resources import card_path

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

COLUMN_DOCS = {
    "preferences": {
        "pair_id": "stable id of the pair (from `evoq-data pairs`)",
        "image_a / image_b": "the two images (`datasets.Image`; embedded bytes)",
        "image_a_id / image_b_id": "sha256 of each image file's bytes",
        "image_a_path / image_b_path": "the image paths on the machine that voted",
        "votes_a / votes_b": "valid votes for image a / image b",
        "invalid_votes": "answers that could not be parsed (kept in the raw votes)",
        "total_votes": "K, all sampled answers for the pair",
        "p_star": "pseudo-preference of a over b: hard 1 / 0 / 0.5 (paper Eq. 1) or the vote "
                  "fraction (soft); null with no valid vote",
        "vote_fraction_a": "votes_a / (votes_a + votes_b)",
        "agreement": "majority share of the valid votes",
        "wilson_low / wilson_high": "95% Wilson interval of vote_fraction_a",
        "votes_first_shown": "valid votes that went to whichever image was shown first",
    },
    "images": {
        "image_id": "sha256 of the image file's bytes",
        "image": "the image (`datasets.Image`; embedded bytes, once per image)",
        "image_path": "the path on the machine that voted",
        "wins / losses / ties / comparisons": "outcomes over the kept pairs",
        "win_rate": "wins / comparisons",
        "bt_score": "Bradley-Terry score fitted on the decisive pairs",
    },
}


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
    card = DatasetCard.from_template(
        data, template_path=str(card_path(TEMPLATE)), meta=meta, votes=votes,
        aggregate=meta["aggregate"], pairs=meta.get("pairs") or {},
        stats=meta.get("stats") or {}, stats_md=stats_body, plots=missing_plots,
        column_docs=COLUMN_DOCS, citation=CITATION, pretty_name=pretty,
        filters={k: "none" if v is None else v
                 for k, v in (meta["aggregate"].get("filters") or {
                     "min_agreement": None, "min_valid_votes": None}).items()},
        sizes={k: _human(v) for k, v in meta["image_bytes"].items()},
    )
    return str(card)
