"""The loop teaches, through `evoq-train evolve` itself (bench/evolve_learns.py): round 1
voted by the tiny brightness judge, round 2 by the round-1 model, on the brightness task
(train pool without labels, held-out images with labels). GRPO also trains the compare
prompt (`--compare_weight 1`): without it the tiny model forgets how to vote (docs/evolve.md,
run S; docs/train.md, "Keeping the voting skill"); and its KL coefficient is 0.3 (`beta=0.3`,
the bench's default 0.1): at 0.1 seed 1's score answers collapsed to one constant answer in
every setting tried, the fidelity reward's constant-answer optimum, which a stronger pull
toward the starting model's varied answers holds off until the ranking is learned
(docs/evolve.md, "Seed 1 with a stronger KL term"); and round 2 trains from the base model
(`--init-from base`; evolve's default trains on from the round-1 model): trained on from
round 1, seed 0's round 2 saturated its scores at the ends of the scale and lost 0.14
(docs/evolve.md, "Round 2 from the base model").

Slow: one seed is two rounds of 1,024 pairs x K = 8 votes and 300 GRPO steps each, about
40 minutes on 2 CPU cores; the three seeds side by side 58 minutes (December 2026, held-out
SRCC base -> round 1 -> round 2: seed 0 -0.144, 0.810, 0.844; seed 1 0.040, 0.697, 0.779;
seed 2 0.017, 0.570, 0.572). The fast test that
fails on the same sign bugs is tests/test_orientation.py (every stage's p* and the reward
point the known way for swapped and unswapped votes).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROUND1_GAIN = 0.3   # round-1 held-out SRCC >= the warmed-up base's + this
ROUND2_DROP = 0.1   # round-2 held-out SRCC >= round 1's - this


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_teacher_then_self_raises_held_out_srcc(tmp_path, seed):
    out = tmp_path / f"seed-{seed}"
    cmd = [sys.executable, str(ROOT / "bench" / "evolve_learns.py"), "--rounds", "2",
           "--n-train", "256", "--n-heldout", "64", "--pairs", "1024", "-k", "8",
           "--min-agreement", "0.6", "--max-steps", "300", "--train-arg", "compare_weight=1",
           "--train-arg", "beta=0.3", "--init-from", "base", "--seed", str(seed),
           "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rounds = json.loads((out / "results.json").read_text())["rounds"]
    srcc = [r["srcc"] for r in rounds]
    assert len(srcc) == 3, rounds
    # round 1's pseudo-labels come from the judge and are mostly right
    assert rounds[1]["pseudo_label_accuracy"] > 0.75, rounds[1]
    assert srcc[1] >= srcc[0] + ROUND1_GAIN, srcc
    assert srcc[2] >= srcc[1] - ROUND2_DROP, srcc
