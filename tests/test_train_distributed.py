"""``evoq-train grpo`` under ``accelerate launch``: 2 CPU processes keep every pair together;
DeepSpeed ZeRO-2 in one CPU process."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict

import pyarrow.parquet as pq
import pytest
from fixtures.push import make_prefs_dir
from fixtures.train import accelerate_launch, assert_same_weights, checkpoints, summary_of

pytest.importorskip("trl")
pytest.importorskip("accelerate")

G = 4  # num_generations of the cpu-smoke recipe
# accelerate 1.15's --cpu starts one process unless mpirun is given; --multi_gpu starts them
# with torchrun, and the recipe's use_cpu makes them gloo CPU processes (MULTI_CPU).
TWO_CPU_PROCESSES = ["--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                     "--mixed_precision", "no", "--dynamo_backend", "no"]


# Slow (~15 s: two GRPO processes under accelerate launch). Fast twins: the sampler's shards
# under accelerate's BatchSamplerShard for 2-4 processes (tests/test_train_config.py) and the
# reward refusing a pair split across processes (tests/test_train_rewards.py).
@pytest.mark.slow
def test_two_processes_every_reward_call_sees_both_images_of_its_pairs(tmp_path, tiny_vlm):
    prefs = make_prefs_dir(tmp_path / "run")
    audit = tmp_path / "audit.jsonl"
    out = tmp_path / "out"
    proc = accelerate_launch(TWO_CPU_PROCESSES,
                             ["--config", "cpu-smoke", "--dataset", str(prefs), "--model",
                              str(tiny_vlm), "--output-dir", str(out), "--pair_audit_path",
                              str(audit)], timeout=600)
    summary = summary_of(proc.stdout)  # one summary, from rank 0 only
    assert summary["global_steps"] == 2 and summary["pairs_used"] == 4
    lineage = json.loads((out / "evoq_train.json").read_text())
    assert (lineage["world_size"], lineage["distributed_type"]) == (2, "MULTI_CPU")

    pair_images = {r["pair_id"]: {r["image_a_id"], r["image_b_id"]}
                   for r in pq.read_table(prefs / "preferences.parquet").to_pylist()
                   if r["p_star"] is not None}
    calls = [json.loads(line) for line in audit.read_text().splitlines()]
    by_rank = defaultdict(list)
    for call in calls:
        by_rank[call["rank"]].append(call["pairs"])
    # Two steps, one generation per step, one reward call per process per generation.
    assert sorted(by_rank) == [0, 1] and all(len(v) == 2 for v in by_rank.values())
    for call in calls:
        for pair_id, images in call["pairs"].items():
            assert set(images) == pair_images[pair_id], (pair_id, images)
            assert all(n == G for n in images.values()), (pair_id, images)
    for step in range(2):  # the processes share out different pairs, whole
        assert not set(by_rank[0][step]) & set(by_rank[1][step])
    seen = {p for call in calls for p in call["pairs"]}
    assert seen == set(pair_images)  # one epoch of 4 pairs = 2 steps x 2 processes x 1 pair


def _zero2_cpu() -> list[str]:
    from evoq_train.recipes import recipes_dir

    return ["--config_file", str(recipes_dir() / "accelerate" / "zero2-cpu.yaml")]


@pytest.mark.slow  # two launches each: about 2 min per case on 2 busy cores
@pytest.mark.parametrize("launcher", ["2 processes", "deepspeed zero2"])
def test_resumed_after_checkpoint_1_ends_with_the_uninterrupted_weights(launcher, tmp_path,
                                                                        tiny_vlm):
    """2 processes: each loads the checkpoint's weights before accelerate wraps the model (the
    plain process's path, tested in the default run by tests/test_train_resume.py) and its
    own RNG state; DeepSpeed: its engine reloads its own module and optimizer states."""
    launch = TWO_CPU_PROCESSES if launcher == "2 processes" else _zero2_cpu()
    prefs = make_prefs_dir(tmp_path / "run")
    args = ["--config", "cpu-smoke", "--dataset", str(prefs), "--model", str(tiny_vlm),
            "--save_strategy", "steps", "--save_steps", "1"]
    full, stopped = tmp_path / "full", tmp_path / "stopped"
    accelerate_launch(launch, [*args, "--output-dir", str(full)], timeout=900)
    assert checkpoints(full) == ["checkpoint-1", "checkpoint-2"]
    # What a run killed after its first checkpoint leaves (same seed, same checkpoint).
    shutil.copytree(full / "checkpoint-1", stopped / "checkpoint-1")
    proc = accelerate_launch(launch, [*args, "--output-dir", str(stopped),
                                      "--resume-from-checkpoint", "true"], timeout=900)
    assert summary_of(proc.stdout)["global_steps"] == 2
    assert checkpoints(stopped) == ["checkpoint-1", "checkpoint-2"]
    assert_same_weights(stopped, full)


def test_deepspeed_zero2_single_cpu_process(tmp_path, tiny_vlm):
    """~15 s on 2 idle cores; DeepSpeed's shm op is prebuilt by scripts/setup.sh, else 2-4
    min more. torch caches compiled ops by name in ~/.cache/torch_extensions, so two
    checkouts on one machine rebuild it whenever the other's virtual environment used it
    last (measured: the 45-150 s stalls of this test in full-suite runs beside a clone)."""
    prefs = make_prefs_dir(tmp_path / "run")
    out = tmp_path / "out"
    proc = accelerate_launch(_zero2_cpu(),
                             ["--config", "cpu-smoke", "--dataset", str(prefs), "--model",
                              str(tiny_vlm), "--output-dir", str(out), "--max_steps", "1"],
                             timeout=900)
    assert summary_of(proc.stdout)["global_steps"] == 1
    lineage = json.loads((out / "evoq_train.json").read_text())
    assert (lineage["distributed_type"], lineage["zero_stage"]) == ("DEEPSPEED", 2)
    assert (out / "model.safetensors").is_file() or list(out.glob("*.safetensors"))


def test_zero2_cpu_config_ships(tmp_path):
    import yaml

    from evoq_train.recipes import recipes_dir

    cfg = yaml.safe_load((recipes_dir() / "accelerate" / "zero2-cpu.yaml").read_text())
    assert (cfg["distributed_type"], cfg["deepspeed_config"]["zero_stage"], cfg["num_processes"]) \
        == ("DEEPSPEED", 2, 1)
    z3 = yaml.safe_load((recipes_dir() / "accelerate" / "zero3.yaml").read_text())
    assert (z3["deepspeed_config"]["zero_stage"], z3["num_processes"]) == (3, 8)
