"""`push --export dpo,reasoning_dpo,pseudo_mos`: exact rows, bad input, TRL's DPOTrainer on
the pushed folder, and the pseudo-MOS as scores for `evoq-data eval`."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from fixtures.cli import assert_user_error
from fixtures.push import make_prefs_dir
from typer.testing import CliRunner

from evoq_data.cli import app
from evoq_data.generation.prompts import compare_prompt

runner = CliRunner()


def push(prefs: Path, out: Path, *args: str):
    return runner.invoke(app, ["push", "--prefs", str(prefs), "--repo-id", "me/d", "--version",
                               "v1", "--local-dir", str(out), "--quiet", *args])


def load(folder: Path, config: str) -> list[dict]:
    import datasets

    ds = datasets.load_dataset(str(folder), config, split="train")
    for name, feature in ds.features.items():
        if isinstance(feature, datasets.Image):
            ds = ds.cast_column(name, datasets.Image(decode=False))
        elif isinstance(feature, datasets.List) and isinstance(feature.feature, datasets.Image):
            ds = ds.cast_column(name, datasets.List(datasets.Image(decode=False)))
    return ds.to_list()


@pytest.fixture
def prefs(tmp_path) -> Path:
    return make_prefs_dir(tmp_path / "run")


@pytest.fixture
def ids(prefs) -> list[str]:
    pool = sorted((prefs.parent / "pool").rglob("img*"), key=lambda p: p.name)
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in pool]


def turns(prompt: str, chosen: str, rejected: str) -> dict:
    return {"prompt": [{"role": "user", "content": prompt}],
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}]}


def test_dpo_rows_exactly(prefs, ids, tmp_path):
    # fixture pairs (a, b, votes_a, votes_b, invalid): p01 3-1, p12 0-4, p23 2-2 (tie),
    # p03 1-2, p40 0-0 (no valid vote)
    result = push(prefs, tmp_path / "o", "--images", "once", "--export", "dpo")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["rows"]["dpo"] == 6
    assert summary["exports"]["dpo"] == {"pairs": 5, "left_out_no_majority": 2,
                                         "left_out_below_agreement": 0, "min_agreement": None,
                                         "pairs_used": 3, "rows": 6}
    text = compare_prompt(False).text
    rows = load(tmp_path / "o", "dpo")
    got = [{k: r[k] for k in ("pair_id", "shown_order", "image_ids", "prompt", "chosen",
                              "rejected")} for r in rows]
    expected = []
    for pid, a, b, winner in (("p01", 0, 1, 0), ("p12", 1, 2, 2), ("p03", 0, 3, 3)):
        for order, shown in (("ab", [a, b]), ("ba", [b, a])):
            best = str(shown.index(winner))
            expected.append({"pair_id": pid, "shown_order": order,
                             "image_ids": [ids[i] for i in shown],
                             **turns(text, best, "1" if best == "0" else "0")})
    assert got == expected
    for r in rows:  # the images, in shown order, are the voted files
        assert [hashlib.sha256(i["bytes"]).hexdigest() for i in r["images"]] == r["image_ids"]
    # a minimum agreement leaves out p01 (0.75) and p03 (2/3)
    result = push(prefs, tmp_path / "o2", "--export", "dpo", "--export-min-agreement", "0.8")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["exports"]["dpo"]["left_out_below_agreement"] == 2
    assert {r["pair_id"] for r in load(tmp_path / "o2", "dpo")} == {"p12"}
    card = (tmp_path / "o2" / "README.md").read_text()
    assert "| `dpo` | 2 |" in card
    assert "(1 pairs; 2 without a majority and 2 below agreement 0.8 left out)" in card


def test_reasoning_dpo_rows_and_skips(prefs, ids, tmp_path):
    result = push(prefs, tmp_path / "o", "--export", "reasoning_dpo,pseudo_mos",
                  "--reasoning-samples", "3")
    # pseudo_mos refuses the fixture's made-up bt_score (image 4 has no decisive comparison)
    assert_user_error(result, "gives a bt_score to other images", "re-run `evoq-data aggregate`")
    result = push(prefs, tmp_path / "o", "--export", "reasoning_dpo", "--reasoning-samples", "3")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)["exports"]["reasoning_dpo"]
    # every fixture vote shows a first (order ab): p01 and p03 have a disagreeing vote; p12 has
    # none; the three ba orders have no vote at all
    assert (info["rows"], info["pairs_used"], info["pairs_skipped_no_disagreeing_vote"],
            info["orders_skipped_no_disagreeing_vote"]) == (2, 2, 1, 4)
    assert info["votes_left_out_other_prompt"] == 0
    rows = load(tmp_path / "o", "reasoning_dpo")
    text = compare_prompt(True).text
    assert [{k: r[k] for k in ("pair_id", "shown_order", "image_ids", "prompt", "chosen",
                               "rejected")} for r in rows] == [
        {"pair_id": "p01", "shown_order": "ab", "image_ids": [ids[0], ids[1]],
         **turns(text, "\\boxed{0}", "\\boxed{1}")},
        {"pair_id": "p03", "shown_order": "ab", "image_ids": [ids[0], ids[3]],
         **turns(text, "\\boxed{1}", "\\boxed{0}")}]
    # the indexes name votes with those answers (p01: votes 0-2 say 0, vote 3 says 1)
    assert rows[0]["chosen_vote_index"] in (0, 1, 2) and rows[0]["rejected_vote_index"] == 3
    assert rows[1]["chosen_vote_index"] in (1, 2) and rows[1]["rejected_vote_index"] == 0
    card = (tmp_path / "o" / "README.md").read_text()
    assert "1 pairs and 4 pair-orders skipped for want of a disagreeing vote" in card


@pytest.mark.parametrize("args, fragment", [
    (["--images", "none", "--export", "dpo"], "needs --images embed or once, not none"),
    (["--export", "dpo,sft"], "unknown --export sft"),
    (["--export", "dpo", "--export-min-agreement", "0.3"], "must be in [0.5, 1]"),
    (["--export", "reasoning_dpo", "--reasoning-samples", "0"], "at least 1"),
    (["--export", "reasoning_dpo", "--votes", "/nonexistent/votes"], "is not there"),
])
def test_bad_export_options(prefs, tmp_path, args, fragment):
    assert_user_error(push(prefs, tmp_path / "o", *args), fragment)
    assert not (tmp_path / "o").exists()


def test_reasoning_dpo_leaves_out_votes_of_another_prompt(prefs, tmp_path):
    shard = next((prefs.parent / "votes").glob("votes-*.parquet"))
    table = pq.read_table(shard)
    rows = table.to_pylist()
    for r in rows:  # p01's only disagreeing vote came from another prompt (a mixed run)
        if (r["pair_id"], r["vote_index"]) == ("p01", 3):
            r["prompt_sha256"] = "f" * 64
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), shard)
    result = push(prefs, tmp_path / "o", "--export", "reasoning_dpo")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)["exports"]["reasoning_dpo"]
    assert (info["rows"], info["votes_left_out_other_prompt"]) == (1, 1)
    assert [r["pair_id"] for r in load(tmp_path / "o", "reasoning_dpo")] == ["p03"]


def test_reasoning_dpo_refuses_votes_of_another_prompt(prefs, tmp_path):
    manifest = json.loads((prefs / "manifest.json").read_text())
    manifest["votes"]["prompt_sha256"] = "0" * 64
    (prefs / "manifest.json").write_text(json.dumps(manifest))
    assert_user_error(push(prefs, tmp_path / "o", "--export", "reasoning_dpo"),
                      "not made with evoq's compare prompt")


@pytest.mark.parametrize("config", ["dpo", "reasoning_dpo"])
def test_dpo_trainer_trains_two_steps_on_the_pushed_folder(config, prefs, tiny_vlm, tmp_path):
    """TRL's DPOTrainer reads the config straight from `load_dataset` (no torchvision: the
    processor is evoq's image-only Qwen2.5-VL processor, passed as processing_class)."""
    import datasets
    import torch
    from transformers import AutoModelForImageTextToText
    from trl import DPOConfig, DPOTrainer

    from evoq_data.generation.modeling import load_processor

    assert push(prefs, tmp_path / "repo", "--images", "once", "--export", config).exit_code == 0
    ds = datasets.load_dataset(str(tmp_path / "repo"), config, split="train")
    model = AutoModelForImageTextToText.from_pretrained(str(tiny_vlm), dtype=torch.float32)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = DPOConfig(output_dir=str(tmp_path / "out"), max_steps=2, learning_rate=1e-3,
                     per_device_train_batch_size=1, logging_steps=1, save_strategy="no",
                     report_to=[], use_cpu=True, bf16=False, max_length=None, seed=0)
    processor = load_processor(str(tiny_vlm))
    trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=processor)
    batch = trainer.data_collator([dict(ds[0])])
    # both images reach the model in the prompt of the chosen and of the rejected sequence
    assert batch["image_grid_thw"].shape[0] == 4
    start = processor.tokenizer.convert_tokens_to_ids("<|vision_start|>")
    assert (batch["input_ids"] == start).sum(dim=1).tolist() == [2, 2]
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert trainer.state.global_step == 2 and len(logs) == 2
    assert logs[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)  # policy = reference
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())


# --- pseudo_mos --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "demo"
    res = runner.invoke(app, ["demo", "--out", str(out), "--photos", "2", "-k", "8", "-q"])
    assert res.exit_code == 0, res.output
    return out


def independent_bt_interval(prefs: Path, alpha: float):
    """The Laplace interval by a dense Hessian, from the aggregate's own files."""
    images = pq.read_table(prefs / "images.parquet").to_pylist()
    index = {r["image_id"]: k for k, r in enumerate(images)}
    theta = np.array([r["bt_score"] if r["bt_score"] is not None else 0.0 for r in images])
    h = 2 * alpha * np.eye(len(images))
    for r in pq.read_table(prefs / "preferences.parquet").to_pylist():
        if r["votes_a"] == r["votes_b"]:
            continue
        w, lo = ((index[r["image_a_id"]], index[r["image_b_id"]]) if r["votes_a"] > r["votes_b"]
                 else (index[r["image_b_id"]], index[r["image_a_id"]]))
        s = 1 / (1 + math.exp(-(theta[w] - theta[lo])))
        for i, j, sign in ((w, w, 1), (lo, lo, 1), (w, lo, -1), (lo, w, -1)):
            h[i, j] += sign * s * (1 - s)
    se = np.sqrt(np.diag(np.linalg.inv(h)))
    return {r["image_id"]: (theta[k], se[k]) for k, r in enumerate(images)}


@pytest.mark.parametrize("layout", ["embed", "once", "none"])
def test_pseudo_mos_rows_and_interval(demo, layout, tmp_path):
    out = tmp_path / "repo"
    result = push(demo / "prefs", out, "--images", layout, "--export", "pseudo_mos")
    assert result.exit_code == 0, result.output
    rows = load(out, "pseudo_mos")
    images = pq.read_table(demo / "prefs" / "images.parquet").to_pylist()
    assert [r["image_id"] for r in rows] == [r["image_id"] for r in images]
    assert ("image" in rows[0]) == (layout == "embed")
    truth = independent_bt_interval(demo / "prefs", 0.1)
    for r, img in zip(rows, images, strict=True):
        theta, se = truth[r["image_id"]]
        assert r["bt_score"] == pytest.approx(img["bt_score"])
        assert r["bt_se"] == pytest.approx(se, rel=1e-6)
        assert (r["bt_low"], r["bt_high"]) == pytest.approx((theta - 1.959964 * se,
                                                             theta + 1.959964 * se), rel=1e-5)
        assert r["pseudo_mos"] == pytest.approx(1 + 4 / (1 + math.exp(-theta)))
        assert r["pseudo_mos_low"] < r["pseudo_mos"] < r["pseudo_mos_high"]
        assert r["comparisons"] == img["comparisons"]
        if layout == "embed":
            assert hashlib.sha256(r["image"]["bytes"]).hexdigest() == r["image_id"]


def test_card_snippets_with_pseudo_mos(demo, tmp_path):
    from test_publish_layouts import run_card_snippets

    out = tmp_path / "repo"
    assert push(demo / "prefs", out, "--images", "embed", "--export", "pseudo_mos").exit_code == 0
    scope = run_card_snippets(out, "me/d", demo / "photos")
    assert len(scope["pseudo_mos"]) == pq.read_metadata(demo / "prefs" / "images.parquet").num_rows


def test_pseudo_mos_evaluates_against_the_known_levels(demo, tmp_path):
    out = tmp_path / "repo"
    assert push(demo / "prefs", out, "--images", "once", "--export", "pseudo_mos").exit_code == 0
    levels = pq.read_table(demo / "distorted" / "distortions.parquet",
                           columns=["image_id", "level"])
    mos = [5.0 - v for v in levels.column("level").to_pylist()]
    pacsv.write_csv(pa.table({"image_id": levels.column("image_id"), "mos": mos}),
                    tmp_path / "levels.csv")
    for scores in (out, next((out / "pseudo_mos").glob("*.parquet"))):
        res = runner.invoke(app, ["eval", "--scores", str(scores), "--labels",
                                  f"demo={tmp_path / 'levels.csv'}", "--out",
                                  str(tmp_path / "eval")])
        assert res.exit_code == 0, res.output
        metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())["benchmarks"][0]
        ours = {r["image_id"]: r["pseudo_mos"] for r in load(out, "pseudo_mos")}
        from scipy.stats import spearmanr

        label = dict(zip(levels.column("image_id").to_pylist(), mos, strict=True))
        common = [i for i in ours if i in label and ours[i] is not None]
        assert metrics["matched"] == len(common)
        assert metrics["srcc"] == pytest.approx(
            spearmanr([ours[i] for i in common], [label[i] for i in common]).statistic)
        assert metrics["srcc"] > 0.5  # the pseudo-labels rank the distortion levels
    assert_user_error(runner.invoke(app, ["eval", "--scores", str(demo / "prefs"), "--labels",
                                          f"demo={tmp_path / 'levels.csv'}", "--out",
                                          str(tmp_path / "e2")]), "pseudo_mos")


def test_pseudo_mos_refuses_scores_that_are_not_the_fit(demo, tmp_path):
    import shutil

    prefs = tmp_path / "prefs"
    shutil.copytree(demo / "prefs", prefs)
    table = pq.read_table(prefs / "images.parquet")
    scores = table.column("bt_score").to_pylist()
    scores[0] += 0.5
    pq.write_table(table.set_column(table.schema.get_field_index("bt_score"), "bt_score",
                                    pa.array(scores, pa.float64())), prefs / "images.parquet")
    assert_user_error(push(prefs, tmp_path / "o", "--export", "pseudo_mos"),
                      "bt_score is not the Bradley–Terry fit of preferences.parquet")
