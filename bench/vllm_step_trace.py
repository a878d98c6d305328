"""Run one ``evoq-data vote`` with every vLLM engine step timed: where a vote's time goes.

    python bench/vllm_step_trace.py TRACE.json vote --engine vllm --model JUDGE ...

The arguments after TRACE.json are ``evoq-data``'s own. The command runs in this process with
vLLM's ``LLMEngine.step`` wrapped (nothing else changes): each step's start and end and the
number of sequences vLLM's scheduler was running after it go to TRACE.json as
``{"steps": [[t0, t1, running], ...], "max_num_seqs": N}``. The sum of the steps is the
engine's time (the model's forward passes, sampling, detokenizing); ``vote_seconds`` less that
is the time spent outside the engine's steps in this thread: evoq's scheduling and parsing,
vLLM's front end adding each request (rendering, multimodal processing, the ``n`` children),
writing shards. ``bench/vote_cost.py --vllm-only --trace`` runs its settings through this and
reports the split. Needs vLLM's in-process engine core (evoq's default on CPU), whose
scheduler this reads; it is how the step of that core is seen from here.
"""

from __future__ import annotations

import json
import sys
import time


def trace_steps(out: str, argv: list[str]) -> None:
    from vllm.v1.engine.llm_engine import LLMEngine

    steps: list[list[float]] = []
    max_seqs = [0]
    step = LLMEngine.step

    def timed(self):
        t0 = time.perf_counter()
        result = step(self)
        t1 = time.perf_counter()
        core = getattr(getattr(self.engine_core, "engine_core", None), "scheduler", None)
        running = len(core.running) if core is not None else -1
        max_seqs[0] = self.vllm_config.scheduler_config.max_num_seqs
        steps.append([t0, t1, running])
        return result

    LLMEngine.step = timed
    sys.argv = ["evoq-data", *argv]
    from evoq_data.cli import main

    try:
        main()
    finally:
        with open(out, "w", encoding="utf-8") as fh:
            json.dump({"steps": steps, "max_num_seqs": max_seqs[0]}, fh)


def summarize(path: str) -> dict:
    """Engine seconds, steps, and the steps (and their seconds) that ran under half of
    ``max_num_seqs`` sequences (the run's tail, or a batch the scheduler could not fill)."""
    data = json.loads(open(path, encoding="utf-8").read())
    steps, cap = data["steps"], data["max_num_seqs"] or 1
    low = [s for s in steps if 0 <= s[2] < cap / 2]
    return {"engine_seconds": sum(t1 - t0 for t0, t1, _ in steps), "steps": len(steps),
            "low_steps": len(low), "low_seconds": sum(t1 - t0 for t0, t1, _ in low)}


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit("usage: python bench/vllm_step_trace.py TRACE.json EVOQ-DATA-ARGS...")
    trace_steps(sys.argv[1], sys.argv[2:])
