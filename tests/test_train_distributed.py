"""``evoq-train grpo`` under ``accelerate launch``: 2 CPU processes keep every pair together;
DeepSpeed ZeRO-2 in one CPU process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import defaultdict

import pyarrow.parquet as pq
import pytest
from fixtures.ports import free_port as _free_port
from fixtures.push import make_prefs_dir

pytest.importorskip("trl")
pytest.importorskip("accelerate")

G = 4  # num_generations of the cpu-smoke recipe


def _summary(stdout: str) -> dict:
    """The JSON summary (the accelerate launcher itself may print a DeepSpeed warning first)."""
    return json.loads(stdout[stdout.index("{\n"):])


def _launch(launch_args: list[str], train_args: list[str], timeout: int) -> subprocess.CompletedProcess:
    accelerate = shutil.which("accelerate")
    if accelerate is None:
        pytest.skip("accelerate console script not on PATH")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    cmd = [accelerate, "launch", *launch_args, "--main_process_port", str(_free_port()),
           "-m", "evoq_train.cli", "grpo", *train_args, "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def test_two_processes_every_reward_call_sees_both_images_of_its_pairs(tmp_path, tiny_vlm):
    prefs = make_prefs_dir(tmp_path / "run")
    audit = tmp_path / "audit.jsonl"
    out = tmp_path / "out"
    # accelerate 1.15's --cpu starts one process unless mpirun is given; --multi_gpu starts
    # them with torchrun, and the recipe's use_cpu makes them gloo CPU processes (MULTI_CPU).
    proc = _launch(["--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                    "--mixed_precision", "no", "--dynamo_backend", "no"],
                   ["--config", "cpu-smoke", "--dataset", str(prefs), "--model", str(tiny_vlm),
                    "--output-dir", str(out), "--pair_audit_path", str(audit)], timeout=600)
    summary = _summary(proc.stdout)  # one summary, from rank 0 only
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


def test_deepspeed_zero2_single_cpu_process(tmp_path, tiny_vlm):
    """~40-70 s; DeepSpeed's shm op is prebuilt by scripts/setup.sh (else ~2-4 min more)."""
    from evoq_train.settings import recipes_dir

    prefs = make_prefs_dir(tmp_path / "run")
    out = tmp_path / "out"
    proc = _launch(["--config_file", str(recipes_dir() / "accelerate" / "zero2-cpu.yaml")],
                   ["--config", "cpu-smoke", "--dataset", str(prefs), "--model", str(tiny_vlm),
                    "--output-dir", str(out), "--max_steps", "1"], timeout=900)
    assert _summary(proc.stdout)["global_steps"] == 1
    lineage = json.loads((out / "evoq_train.json").read_text())
    assert (lineage["distributed_type"], lineage["zero_stage"]) == ("DEEPSPEED", 2)
    assert (out / "model.safetensors").is_file() or list(out.glob("*.safetensors"))


def test_zero2_cpu_config_ships(tmp_path):
    import yaml

    from evoq_train.settings import recipes_dir

    cfg = yaml.safe_load((recipes_dir() / "accelerate" / "zero2-cpu.yaml").read_text())
    assert (cfg["distributed_type"], cfg["deepspeed_config"]["zero_stage"], cfg["num_processes"]) \
        == ("DEEPSPEED", 2, 1)
    z3 = yaml.safe_load((recipes_dir() / "accelerate" / "zero3.yaml").read_text())
    assert (z3["deepspeed_config"]["zero_stage"], z3["num_processes"]) == (3, 8)
