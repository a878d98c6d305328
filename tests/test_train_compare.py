"""``evoq-train grpo --compare_weight``: the compare rows (both shown orders of every pair),
the agreement reward, the rewards that leave compare rows alone, the batching of four rows a
pair, and (slow) a real run of the tiny model with the option on."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fixtures.cli import assert_user_error
from fixtures.push import make_prefs_dir
from typer.testing import CliRunner

pytest.importorskip("trl")

from evoq_data.core.errors import EvoqError  # noqa: E402
from evoq_data.generation.prompts import chat_messages, compare_prompt, score_prompt  # noqa: E402
from evoq_train.config import EvoqGRPOConfig, parse_grpo_args  # noqa: E402
from evoq_train.data import load_preferences, to_image_prompts, vote_reasoning  # noqa: E402
from evoq_train.rewards import agreement_reward, fidelity_reward, format_reward  # noqa: E402
from evoq_train.sampler import PairRepeatSampler  # noqa: E402

runner = CliRunner()
OFF_COLUMNS = ["prompt", "image", "pair_id", "image_id", "partner_id", "role", "p_star_self"]


@pytest.fixture(scope="module")
def prefs(tmp_path_factory) -> Path:
    """The push fixture's PREFS_DIR: p* 1, 0, 0.5, 0 and one pair without a valid vote."""
    return make_prefs_dir(tmp_path_factory.mktemp("compare") / "run")


def _file_id(cell: dict) -> str:
    """The image id (sha256 of the file's bytes) of an undecoded image cell."""
    data = cell["bytes"] if cell.get("bytes") else Path(cell["path"]).read_bytes()
    return hashlib.sha256(data).hexdigest()


def test_compare_rows_show_both_orders_and_reward_the_image_p_star_favours(prefs):
    import datasets

    table = pq.read_table(prefs / "preferences.parquet").to_pylist()
    p_star = {r["pair_id"]: r["p_star"] for r in table}
    sides = {r["pair_id"]: (r["image_a_id"], r["image_b_id"]) for r in table}
    ds, summary = to_image_prompts(load_preferences(prefs), compare=True)
    assert summary == {"pairs_total": 5, "pairs_skipped_null_p_star": 1, "pairs_used": 4,
                       "prompts": 16, "compare_prompts": 8}
    assert ds.column_names == ["prompt", "images", "pair_id", "image_id", "partner_id", "role",
                               "p_star_self", "task"]
    ds = ds.cast_column("images", datasets.List(datasets.Image(decode=False)))
    rows = ds.to_list()
    assert [r["task"] for r in rows] == ["score", "score", "compare", "compare"] * 4
    assert [r["pair_id"] for r in rows] == [p for p in ("p01", "p12", "p23", "p03")
                                            for _ in range(4)]
    texts = {"score": score_prompt(True).text, "compare": compare_prompt(True).text}
    agree = agreement_reward()
    for r in rows:
        assert r["prompt"] == [{"role": "user", "content": texts[r["task"]]}]
        shown = [_file_id(c) for c in r["images"]]  # the pixels, not the id columns
        a, b = sides[r["pair_id"]]
        p = p_star[r["pair_id"]]
        if r["task"] == "score":
            assert shown == [r["image_id"]] and len(shown) == 1
            continue
        # Independently of the row's own columns: which index names the image p* favours?
        assert sorted(shown) == sorted([a, b])
        assert shown == [r["image_id"], r["partner_id"]]
        p_first = p if shown[0] == a else 1.0 - p
        assert r["p_star_self"] == p_first
        assert r["role"] == ("a" if shown[0] == a else "b")
        reward0, reward1 = agree(None, ["\\boxed{0}", "\\boxed{1}"], p_star_self=[p_first] * 2,
                                 task=["compare"] * 2)
        if p != 0.5:
            better = a if p > 0.5 else b
            right = shown.index(better)
            assert (reward0, reward1)[right] == max(p, 1 - p) == 1.0
            assert (reward0, reward1)[1 - right] == min(p, 1 - p) == 0.0
        else:
            assert (reward0, reward1) == (0.5, 0.5)
    # Both shown orders of each pair: a first once, b first once.
    compare = [r for r in rows if r["task"] == "compare"]
    assert Counter((r["pair_id"], r["role"]) for r in compare) == {
        (p, side): 1 for p in ("p01", "p12", "p23", "p03") for side in "ab"}


@pytest.mark.parametrize("reasoning", [True, False])
def test_compare_rows_reach_the_model_as_the_vote_stage_asks(prefs, reasoning):
    """TRL's message builder puts the row's images before its text: the very messages
    `evoq-data vote` builds for that shown order."""
    from trl.data_utils import prepare_multimodal_messages

    ds, _ = to_image_prompts(load_preferences(prefs), compare=True, compare_reasoning=reasoning)
    row = ds[3]
    assert row["task"] == "compare"
    images = row["images"]
    assert prepare_multimodal_messages(row["prompt"], images=images) == chat_messages(
        compare_prompt(reasoning), images)


def test_option_off_keeps_the_per_image_rows(prefs):
    import datasets

    off, summary = to_image_prompts(load_preferences(prefs))
    assert off.column_names == OFF_COLUMNS and isinstance(off.features["image"], datasets.Image)
    assert summary == {"pairs_total": 5, "pairs_skipped_null_p_star": 1, "pairs_used": 4,
                       "prompts": 8}
    on, _ = to_image_prompts(load_preferences(prefs), compare=True)
    columns = OFF_COLUMNS[2:] + ["prompt"]
    score_rows = [r for r in on.select_columns(columns).to_list()]
    kept = [r for i, r in enumerate(score_rows) if i % 4 < 2]
    assert kept == off.select_columns(columns).to_list()


def test_agreement_reward_by_hand():
    logged = {}
    rewards = agreement_reward()(
        None,
        ["<think>x</think> \\boxed{3}", "<think>a</think> \\boxed{0}", "<think>a</think> \\boxed{0}",
         "no answer", "<think>b</think> \\boxed{1}", [{"role": "assistant",
                                                       "content": "<think>c</think> \\boxed{1}"}]],
        p_star_self=[0.7, 0.7, 0.3, 1.0, 0.5, 0.2],
        task=["score", "compare", "compare", "compare", "compare", "compare"],
        log_metric=logged.__setitem__)
    assert rewards == [None, 0.7, 0.3, 0.0, 0.5, 0.8]
    # valid: 4 of 5 compare answers; decided and valid: rows 1 (right), 2 (wrong), 5 (right)
    assert logged == {"compare_valid_rate": 0.8, "compare_accuracy": pytest.approx(2 / 3)}


def test_agreement_reward_parses_as_the_compare_prompt_asks():
    direct = agreement_reward(reasoning=False)
    assert direct(None, ["1"], p_star_self=[0.25], task=["compare"]) == [0.75]
    assert agreement_reward()(None, ["1"], p_star_self=[0.25], task=["compare"]) == [0.0]


def _batch():
    """One pair's two score groups and two compare groups, K = 3."""
    score_a = ["<think>a</think> \\boxed{4}", "<think>a</think> \\boxed{4.5}", "nothing"]
    score_b = ["<think>b</think> \\boxed{2}", "<think>b</think> \\boxed{3}",
               "<think>b</think> \\boxed{2.5}"]
    cmp_ab = ["<think>c</think> \\boxed{0}", "<think>c</think> \\boxed{1}", "<think>c</think> \\boxed{7}"]
    cmp_ba = ["<think>d</think> \\boxed{1}", "\\boxed{1}", "junk"]
    completions = score_a + score_b + cmp_ab + cmp_ba
    cols = {"pair_id": ["p"] * 12,
            "image_id": ["A"] * 3 + ["B"] * 3 + ["A"] * 3 + ["B"] * 3,
            "partner_id": ["B"] * 3 + ["A"] * 3 + ["B"] * 3 + ["A"] * 3,
            "p_star_self": [0.8] * 3 + [0.2] * 3 + [0.8] * 3 + [0.2] * 3,
            "task": ["score"] * 6 + ["compare"] * 6}
    return completions, cols


def test_fidelity_leaves_compare_rows_to_the_agreement_reward():
    completions, cols = _batch()
    with_compare, alone = {}, {}
    r = fidelity_reward()(None, completions, **cols, log_metric=with_compare.__setitem__)
    score_only = {k: v[:6] for k, v in cols.items() if k != "task"}
    expected = fidelity_reward()(None, completions[:6], **score_only,
                                 log_metric=alone.__setitem__)
    assert r[:6] == expected and r[6:] == [None] * 6
    assert with_compare == alone and alone["parse_failure_rate"] == pytest.approx(1 / 6)
    agree = agreement_reward()(None, completions, **cols)
    assert agree[:6] == [None] * 6 and agree[6:] == pytest.approx([0.8, 0.2, 0.0, 0.8, 0.8, 0.0])


def test_format_reward_asks_a_compare_answer_of_compare_rows():
    completions, cols = _batch()
    assert format_reward()(None, completions, task=cols["task"]) == [
        1.0, 1.0, 0.0, 1.0, 1.0, 1.0,   # score: a box with a score after </think>
        1.0, 1.0, 0.0, 1.0, 0.0, 0.0]   # compare: 0 or 1 in the box after </think>
    assert format_reward(compare_reasoning=False)(None, completions, task=cols["task"]) == [
        1.0, 1.0, 0.0, 1.0, 1.0, 1.0] + [None] * 6
    # No task column (the option off): every row is a score row, as before ("1" is a score).
    assert format_reward()(None, completions[6:]) == [0.0, 1.0, 0.0, 1.0, 0.0, 0.0]


def _config(tmp_path, **kw):
    return EvoqGRPOConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, bf16=False,
                          **kw)


def test_compare_rows_double_the_prompts_of_a_device_step(tmp_path):
    off = _config(tmp_path, num_generations=4, samples_per_device=2, per_device_train_batch_size=4)
    on = _config(tmp_path, num_generations=4, samples_per_device=2, per_device_train_batch_size=4,
                 compare_weight=1.0)
    assert (off.prompts_per_pair, off.steps_per_generation) == (2, 2)
    assert (on.prompts_per_pair, on.steps_per_generation) == (4, 4)
    assert on.generation_batch_size == 16 * on.world_size
    with pytest.raises(EvoqError, match="which need 4 x num_generations = 16"):
        _config(tmp_path, num_generations=4, samples_per_device=None,
                per_device_train_batch_size=8, steps_per_generation=1, compare_weight=1.0)
    with pytest.raises(EvoqError, match=r"x 2 \(compare prompts\) = 48 completions"):
        _config(tmp_path, num_generations=4, samples_per_device=6,
                per_device_train_batch_size=32, compare_weight=1.0)


@pytest.mark.parametrize("value", ["-1", "nan"])
def test_bad_compare_weight_is_one_line(tmp_path, value):
    from evoq_train.cli import app

    result = runner.invoke(app, ["grpo", "--output-dir", str(tmp_path), "--compare_weight", value])
    assert_user_error(result, f"compare_weight is {float(value)}", "give 0 (off)")


def test_evolve_train_arg_reaches_the_option(tmp_path):
    from evoq_train.evolve.config import parse_train_args

    argv = parse_train_args(["compare_weight=0.5"])
    assert argv == ["--compare_weight", "0.5"]
    args = parse_grpo_args([*argv, "--output-dir", str(tmp_path), "--use_cpu", "--no_bf16"])
    assert args.training.compare_weight == 0.5 and args.training.prompts_per_pair == 4
    assert parse_grpo_args(["--output-dir", str(tmp_path), "--use_cpu", "--no_bf16"]
                           ).training.compare_weight == 0.0


@pytest.mark.parametrize("num_processes", [1, 2, 3])
def test_sampler_keeps_a_pairs_four_rows_in_one_slice(num_processes):
    from accelerate.data_loader import BatchSamplerShard
    from torch.utils.data import BatchSampler

    g, num_pairs, per_device = 3, 7, 2
    local = per_device * 4 * g

    def sampler():
        return PairRepeatSampler(range(4 * num_pairs), num_generations=g,
                                 pairs_per_batch=per_device * num_processes, repeat_count=2,
                                 seed=3, rows_per_pair=4)

    seen = set()
    for r in range(num_processes):
        batches = BatchSampler(sampler(), batch_size=local, drop_last=False)
        for batch in BatchSamplerShard(batches, num_processes=num_processes, process_index=r,
                                       split_batches=False):
            assert len(batch) == local
            # each row K times in a row (one GRPO group), a pair's rows 4p..4p+3 in order
            groups = [batch[i:i + g] for i in range(0, local, g)]
            assert all(len(set(grp)) == 1 for grp in groups)
            rows = [grp[0] for grp in groups]
            for i in range(0, len(rows), 4):
                p = rows[i] // 4
                assert rows[i:i + 4] == [4 * p, 4 * p + 1, 4 * p + 2, 4 * p + 3]
                seen.add(p)
    assert len(seen) == (num_pairs // (per_device * num_processes)) * per_device * num_processes
    with pytest.raises(EvoqError, match="four rows per pair"):
        PairRepeatSampler(range(6), num_generations=g, rows_per_pair=4)


def test_vote_reasoning_is_read_from_the_aggregate_manifest(tmp_path):
    prefs = make_prefs_dir(tmp_path / "run")
    assert vote_reasoning(prefs) is True
    manifest = json.loads((prefs / "manifest.json").read_text())
    manifest["votes"]["reasoning"] = False
    (prefs / "manifest.json").write_text(json.dumps(manifest))
    assert vote_reasoning(prefs) is False
    (prefs / "manifest.json").unlink()
    assert vote_reasoning(prefs) is None  # hand-made preferences record nothing
    pushed = tmp_path / "pushed"
    pushed.mkdir()
    (pushed / "evoq.json").write_text(json.dumps({"aggregate": {"votes": {"reasoning": False}}}))
    assert vote_reasoning(pushed) is False


def test_training_processor_pads_prompts_on_the_left(tiny_vlm):
    """TRL left-pads its prompt ids; the image-token mask must be padded the same way."""
    from PIL import Image

    from evoq_train.trainer import training_processor

    proc = training_processor(str(tiny_vlm))
    text = proc.apply_chat_template(chat_messages(score_prompt(True), [None]),
                                    add_generation_prompt=True, tokenize=False)
    out = proc(images=[[Image.new("RGB", (256, 256))], [Image.new("RGB", (64, 64))]],
               text=[text, text], padding=True, return_tensors="pt")
    mask, mm = out["attention_mask"][1], out["mm_token_type_ids"][1]
    assert mask[0] == 0 and mask[-1] == 1  # the shorter prompt is padded at the start
    image_token = proc.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert ((out["input_ids"][1] == image_token) == (mm == 1)).all()


@pytest.mark.slow
def test_a_real_run_trains_both_prompts(tmp_path, tiny_vlm):
    """Two GRPO steps of the tiny model, biased to answer a bare "0", on preferences voted
    without the reasoning suffix: every compare answer is valid, names the first shown image,
    so half of the decided ones are right in each step (both orders of a pair), and the
    agreement reward averages p and 1 - p: 0.5."""
    from transformers import AutoTokenizer, TrainerCallback

    from evoq_train.trainer import run_grpo

    prefs = make_prefs_dir(tmp_path / "run")
    manifest = json.loads((prefs / "manifest.json").read_text())
    manifest["votes"]["reasoning"] = False
    (prefs / "manifest.json").write_text(json.dumps(manifest))
    tok = AutoTokenizer.from_pretrained(tiny_vlm)
    zero, eos = tok.encode("0")[0], tok.eos_token_id
    steps = []

    class Keep(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                steps.append(dict(logs))

    out = tmp_path / "out"
    summary = run_grpo({
        "recipe": "cpu-smoke", "model": str(tiny_vlm), "dataset": str(prefs),
        "output_dir": str(out), "compare_weight": 1.0, "reasoning": False, "max_steps": 3,
        "use_cpu": True, "bf16": False, "dtype": "float32", "num_generations": 4,
        "samples_per_device": 2, "per_device_train_batch_size": 4, "max_completion_length": 4,
        "learning_rate": 1e-3, "logging_steps": 1, "report_to": "none", "save_strategy": "no",
        "generation_kwargs": {"sequence_bias": [[[zero], 50.0], [[zero, eos], 100.0]]},
    }, quiet=True, callbacks=[Keep()])
    assert summary["global_steps"] == 3 and summary["compare_prompts"] == 8
    assert len(steps) == 3
    for step in steps:
        assert step["compare_valid_rate"] == 1.0
        assert step["rewards/evoq_agreement/mean"] == pytest.approx(0.5)
        assert step["parse_failure_rate"] == 1.0  # "0" is no score
        # score rows only: the compare rows' format reward is None without the suffix
        assert step["rewards/evoq_format/mean"] == 0.0
    decided = [s["compare_accuracy"] for s in steps if "compare_accuracy" in s]
    assert decided and all(a == 0.5 for a in decided)
    lineage = json.loads((out / "evoq_train.json").read_text())
    assert lineage["compare"] == {"weight": 1.0, "reasoning": False, "reasoning_from": "votes"}
    assert lineage["hyperparameters"]["compare_weight"] == 1.0
    card = (out / "README.md").read_text()
    assert "The compare prompt" in card and "reasoning suffix off" in card
