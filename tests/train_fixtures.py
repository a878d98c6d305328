"""Helpers of the training tests: a model folder's weights, and ``evoq-train grpo`` under
``accelerate launch``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path


def read_weights(folder: Path) -> dict:
    """Every tensor of a model folder's safetensors files, by name."""
    from safetensors.torch import load_file

    tensors = {}
    for f in sorted(Path(folder).glob("*.safetensors")):
        tensors.update(load_file(f))
    return tensors


def assert_same_weights(a: Path, b: Path, atol: float = 1e-6) -> None:
    """The two folders hold the same tensor names with values equal within ``atol``."""
    import torch

    wa, wb = read_weights(a), read_weights(b)
    assert wa and wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=0, atol=atol, msg=name)


def checkpoints(folder: Path) -> list[str]:
    return sorted(p.name for p in Path(folder).glob("checkpoint-*"))


def summary_of(stdout: str) -> dict:
    """The JSON summary (the accelerate launcher itself may print a DeepSpeed warning first)."""
    return json.loads(stdout[stdout.index("{\n"):])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_launch(launch_args: list[str], train_args: list[str],
                      timeout: int) -> subprocess.CompletedProcess:
    """``accelerate launch ... -m evoq_train.cli grpo TRAIN_ARGS --quiet`` on CPU, from this
    interpreter's accelerate (as evolve launches it: no console script looked up on PATH);
    asserts exit code 0."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *launch_args,
           "--main_process_port", str(_free_port()),
           "-m", "evoq_train.cli", "grpo", *train_args, "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc
