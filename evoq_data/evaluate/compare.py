"""``evoq-data compare``: K votes on one pair of images, half in each shown order.

The odd vote (K odd) is shown in the given order; the votes are counted back to the two
images, per shown order and per parse status.
"""

from __future__ import annotations

from pathlib import Path

from evoq_data.core.errors import EvoqError
from evoq_data.core.ids import request_seed
from evoq_data.generation.engines import GenRequest
from evoq_data.generation.parse import parse_compare
from evoq_data.generation.spec import GenerationSpec, open_engine
from evoq_data.images.pool import single_image


def run_compare(image_a: str | Path, image_b: str | Path, spec: GenerationSpec, *,
                votes: int = 8, seed: int = 0) -> dict:
    """``evoq-data compare``: K votes on one pair, both shown orders. Returns the tally."""
    if votes < 1:
        raise EvoqError(f"--votes must be at least 1, got {votes}")
    a, b = single_image(Path(image_a)), single_image(Path(image_b))
    prompt, reasoning = spec.compare_prompt, spec.reasoning
    n_ab, n_ba = votes - votes // 2, votes // 2
    requests = [GenRequest(images=(a.path, b.path), prompt=prompt, n=n_ab,
                           image_ids=(a.image_id, b.image_id),
                           seed=request_seed("compare", seed, a.image_id, b.image_id, 0, n=n_ab))]
    if n_ba:
        requests.append(GenRequest(images=(b.path, a.path), prompt=prompt, n=n_ba,
                                   image_ids=(b.image_id, a.image_id),
                                   seed=request_seed("compare", seed, a.image_id, b.image_id, 1, n=n_ba)))
    eng = open_engine(spec)
    try:
        outputs = eng.generate(requests, spec.sampling)
    finally:
        eng.close()
    tally = {"a": 0, "b": 0, "invalid": 0}
    by_order = {"a_first": {"a": 0, "b": 0, "invalid": 0},
                "b_first": {"a": 0, "b": 0, "invalid": 0}}
    statuses: dict[str, int] = {}
    answers = []
    for order, names, raws in zip(("a_first", "b_first"), (("a", "b"), ("b", "a")), outputs,
                                  strict=False):
        for raw in raws:
            value, status = parse_compare(raw, reasoning)
            statuses[status] = statuses.get(status, 0) + 1
            who = "invalid" if value is None else names[value]
            tally[who] += 1
            by_order[order][who] += 1
            answers.append({"order": order, "raw_text": raw, "parse_status": status,
                            "winner": who})
    valid = tally["a"] + tally["b"]
    better = "a" if tally["a"] > tally["b"] else "b" if tally["b"] > tally["a"] else None
    return {
        "image_a": a.path, "image_b": b.path, "better": better,
        "better_path": {"a": a.path, "b": b.path}.get(better),
        "votes_a": tally["a"], "votes_b": tally["b"], "invalid_votes": tally["invalid"],
        "total_votes": votes, "vote_fraction_a": tally["a"] / valid if valid else None,
        "by_order": by_order, "parse_status": statuses, "model": eng.model,
        "engine": eng.name, "prompt_id": prompt.prompt_id, "answers": answers,
    }


