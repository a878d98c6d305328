"""Published preferences -> one training prompt per image, with its pair's metadata.

Sources, in the order they are recognised:

* an aggregate ``PREFS_DIR`` (a folder holding ``preferences.parquet``; images read from the
  ``image_a_path`` / ``image_b_path`` columns, relative paths tried from the working directory
  and then from the folder);
* a local dataset folder in the layout ``evoq-data push --local-dir`` writes (its card's
  ``configs:`` name the ``preferences`` config);
* a Hub dataset id, at ``revision`` (a tag such as ``v1``, a branch or a commit).

Each pair with a p* becomes two consecutive rows (row ``2p`` its first image, ``2p + 1`` its
second), which is what :class:`evoq_train.sampler.PairRepeatSampler` relies on. Pairs whose
p* is null (no valid vote) are skipped and counted. With ``compare`` (``evoq-train grpo
--compare_weight``) a pair is four rows: its two score prompts, then its compare prompt shown
in both orders (rows ``4p`` .. ``4p + 3``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from evoq_data.core.errors import EvoqError, require
from evoq_data.generation.prompts import compare_prompt, score_prompt
from evoq_data.images.decode import dataset_image, needs_normalising

log = logging.getLogger(__name__)

CONFIG = "preferences"
REQUIRED = ("pair_id", "image_a_id", "image_b_id", "p_star")
IMAGE_COLUMNS = ("image_a", "image_b")
PATH_COLUMNS = ("image_a_path", "image_b_path")
# Columns of the per-image training set (besides TRL's ``prompt`` and ``image``).
PROMPT_COLUMNS = ("pair_id", "image_id", "partner_id", "role", "p_star_self")
# With compare rows: which prompt a row holds (the rewards read it), and the values.
TASK_COLUMN = "task"
SCORE, COMPARE = "score", "compare"
ROWS_PER_PAIR = {False: 2, True: 4}  # without / with compare rows


def _resolve(path: str, base: Path) -> str | None:
    for cand in (Path(path), base / path):
        if cand.is_file():
            return str(cand)
    return None


def _from_prefs_dir(folder: Path):
    datasets = require("datasets", "train")
    path = folder / "preferences.parquet"
    try:
        ds = datasets.Dataset.from_parquet(str(path))
    except Exception as exc:  # noqa: BLE001 - any reader failure is a data error here
        raise EvoqError(f"{path} is not a readable Parquet file ({exc})") from exc
    missing = [c for c in PATH_COLUMNS if c not in ds.column_names]
    if missing:
        raise EvoqError(f"dataset {folder} has no images: {path.name} lacks {', '.join(missing)}")
    for col, img_col in zip(PATH_COLUMNS, IMAGE_COLUMNS, strict=True):
        resolved = [_resolve(p, folder) if p else None for p in ds[col]]
        lost = [p for p, r in zip(ds[col], resolved, strict=True) if r is None]
        if lost:
            raise EvoqError(f"dataset {folder} has no images for {len(lost)} row(s): {col} "
                            f"{lost[0]!r} is not a file (from the working directory or {folder})")
        # the pixels the judge saw: the file itself when decoding changes nothing (read by
        # path, lazily), else a PNG of the decoded pixels (EXIF orientation, 16-bit, ...)
        cells = [{"bytes": None, "path": r} if not needs_normalising(Path(r).read_bytes())
                 else dataset_image(r, Path(r).stem) for r in resolved]
        ds = ds.add_column(img_col, cells)
    return ds.cast_column("image_a", datasets.Image()).cast_column("image_b", datasets.Image())


def load_preferences(source: str | Path, revision: str | None = None):
    """The ``preferences`` rows of a PREFS_DIR, a local dataset folder or a Hub dataset."""
    require("datasets", "train")
    folder = Path(source)
    if folder.is_dir() and (folder / "preferences.parquet").is_file():
        ds = _from_prefs_dir(folder)
    else:
        if not folder.exists() and (str(source).startswith((".", "/")) or str(source).count("/") != 1):
            raise EvoqError(f"dataset not found: {source} (give a PREFS_DIR, a dataset folder "
                            "written by `evoq-data push --local-dir`, or a Hub id)")
        from evoq_data.load import load_preferences as load_published  # any image layout

        ds = load_published(str(source), revision, CONFIG, materialize=True)
    missing = [c for c in REQUIRED if c not in ds.column_names]
    if missing:
        raise EvoqError(f"dataset {source} lacks column(s) {', '.join(missing)}; an evoq "
                        f"preferences dataset has {', '.join(REQUIRED)}")
    if not all(c in ds.column_names for c in IMAGE_COLUMNS):
        raise EvoqError(f"dataset {source} has no images (no image_a/image_b columns): push it "
                        "with embedded images (the default of `evoq-data push`) or train from "
                        "the PREFS_DIR whose image paths exist here")
    return ds


def to_image_prompts(pairs, *, reasoning: bool = True, max_pairs: int | None = None,
                     compare: bool = False, compare_reasoning: bool = True):
    """Per-image prompts (rows 2p, 2p+1 = pair p) and a summary of what was kept and skipped.

    Columns: ``prompt`` (one user turn with the score prompt and, when ``reasoning``, the
    reasoning suffix, verbatim; TRL puts the image before the text), ``image``, ``pair_id``,
    ``image_id``, ``partner_id``, ``role`` ("a" or "b") and ``p_star_self`` (the probability
    that this image beats its partner: p* for the first image, 1 - p* for the second).

    ``compare``: each pair takes four rows, ``4p`` and ``4p + 1`` its score prompts as above,
    ``4p + 2`` its compare prompt (``compare_prompt(compare_reasoning)``, the vote stage's)
    with image a shown first, ``4p + 3`` with image b first. The images go in ``images`` (one
    for a score row, two in shown order for a compare row) and ``task`` says "score" or
    "compare". On a compare row ``image_id`` is the image shown first, ``partner_id`` the one
    shown second, ``role`` the role of the first shown image, and ``p_star_self`` the
    probability that the first shown image is the better one (what answer 0 claims).
    """
    datasets = require("datasets", "train")
    total = len(pairs)
    pairs = pairs.cast_column("image_a", datasets.Image(decode=False))
    pairs = pairs.cast_column("image_b", datasets.Image(decode=False))
    keep = [i for i, p in enumerate(pairs["p_star"]) if p is not None]
    skipped = total - len(keep)
    if max_pairs is not None:
        keep = keep[:max_pairs]
    if not keep:
        raise EvoqError(f"no pair to train on: {total} pair(s), {skipped} without p* (no valid "
                        "vote)")
    pairs = pairs.select(keep)
    text = score_prompt(reasoning).text
    compare_text = compare_prompt(compare_reasoning).text
    image_col = "images" if compare else "image"
    extra = (TASK_COLUMN,) if compare else ()

    def expand(batch):
        out = {k: [] for k in ("prompt", image_col, *PROMPT_COLUMNS, *extra)}

        def add(prompt_text, images, pid, me, other, role, p_self, task):
            out["prompt"].append([{"role": "user", "content": prompt_text}])
            out[image_col].append(images if compare else images[0])
            out["pair_id"].append(pid)
            out["image_id"].append(me)
            out["partner_id"].append(other)
            out["role"].append(role)
            out["p_star_self"].append(p_self)
            if compare:
                out[TASK_COLUMN].append(task)

        for i, pid in enumerate(batch["pair_id"]):
            p = float(batch["p_star"][i])
            a, b = batch["image_a_id"][i], batch["image_b_id"][i]
            img_a, img_b = batch["image_a"][i], batch["image_b"][i]
            add(text, [img_a], pid, a, b, "a", p, SCORE)
            add(text, [img_b], pid, b, a, "b", 1.0 - p, SCORE)
            if compare:  # both shown orders: no position is favoured by the labels
                add(compare_text, [img_a, img_b], pid, a, b, "a", p, COMPARE)
                add(compare_text, [img_b, img_a], pid, b, a, "b", 1.0 - p, COMPARE)
        return out

    features = datasets.Features({
        "prompt": [{"role": datasets.Value("string"), "content": datasets.Value("string")}],
        image_col: [datasets.Image()] if compare else datasets.Image(),
        "pair_id": datasets.Value("string"), "image_id": datasets.Value("string"),
        "partner_id": datasets.Value("string"), "role": datasets.Value("string"),
        "p_star_self": datasets.Value("float64"),
        **({TASK_COLUMN: datasets.Value("string")} if compare else {}),
    })
    images = pairs.map(expand, batched=True, batch_size=256, remove_columns=pairs.column_names,
                       features=features, desc="pairs -> image prompts")
    summary = {"pairs_total": total, "pairs_skipped_null_p_star": skipped,
               "pairs_used": len(keep), "prompts": len(images)}
    if compare:
        summary["compare_prompts"] = 2 * len(keep)
    log.info("training set: %s", summary)
    return images, summary


def vote_reasoning(source: str | Path, revision: str | None = None) -> bool | None:
    """Whether the dataset's votes were asked for with the reasoning suffix, as its aggregate
    manifest records it (a PREFS_DIR's manifest.json, a pushed dataset's evoq.json); None when
    it records none (hand-made preferences, imported votes, no evoq.json)."""
    from evoq_data.core.io import read_json
    from evoq_data.core.manifests import read_manifest

    folder = Path(source)
    if folder.is_dir() and (folder / "preferences.parquet").is_file():
        aggregate = read_manifest(folder, "aggregate manifest", missing_ok=True) or {}
    elif folder.is_dir():
        meta = read_json(folder / "evoq.json", "dataset metadata", missing_ok=True) or {}
        aggregate = meta.get("aggregate") or {}
    else:
        try:
            from huggingface_hub import hf_hub_download

            path = hf_hub_download(str(source), "evoq.json", repo_type="dataset",
                                   revision=revision)
        except Exception as exc:  # noqa: BLE001 - not recorded; the caller says what it uses
            log.warning("no evoq.json in dataset %s (%s)", source, exc)
            return None
        aggregate = (read_json(Path(path), f"evoq.json of {source}") or {}).get("aggregate") or {}
    votes = aggregate.get("votes") if isinstance(aggregate, dict) else None
    value = votes.get("reasoning") if isinstance(votes, dict) else None
    return value if isinstance(value, bool) else None
