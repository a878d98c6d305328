"""Orientation: what the judge preferred reaches the reward the same way round.

A deterministic judge (the PIQE engine: lower PIQE is better, the same answer every time) votes
on every pair of a small pool, in both shown orders (``--order balanced``). PIQE is computed here
on its own, so the better image of every pair is known before anything runs. Every stage must
then point to it: each raw vote's winner, p* after ``aggregate``, p* in the version ``push``
writes, the per-image ``p_star_self`` the GRPO dataset hands the fidelity reward, and the reward
itself (an answer that scores the better image higher must earn ~1, not ~0). One sign flipped
anywhere along the way (the swapped-order rule, votes_a/votes_b, p* or 1 - p*) fails here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from fixtures.votes import read_votes
from typer.testing import CliRunner

from evoq_data.cli import app

pytest.importorskip("pypiqe")

K = 4
# Three photos, each sharp and blurred: six images whose PIQE values are all distinct.
PHOTOS = ("astronaut", "coffee", "chelsea")
BLURS = (0.0, 1.5)


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> tuple[Path, dict[str, float]]:
    """The image folder and each image's PIQE, computed straight from pypiqe."""
    from PIL import Image, ImageFilter
    from pypiqe import piqe
    from skimage import data

    folder = tmp_path_factory.mktemp("orientation") / "pool"
    folder.mkdir()
    quality = {}
    for name in PHOTOS:
        photo = Image.fromarray(getattr(data, name)()).convert("RGB").resize((96, 96))
        for blur in BLURS:
            img = photo.filter(ImageFilter.GaussianBlur(blur)) if blur else photo
            path = folder / f"{name}-blur{blur}.png"
            img.save(path)
            quality[str(path.resolve())] = float(piqe(np.asarray(img)[:, :, ::-1].copy())[0])
    values = sorted(quality.values())
    assert min(np.diff(values)) > 1.0  # no tie, no near-tie
    return folder, quality


def _ok(result):
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def test_votes_to_reward_point_the_known_way(pool, tmp_path):
    from evoq_train.data import load_preferences, to_image_prompts
    from evoq_train.rewards import fidelity_reward

    folder, quality = pool
    run = CliRunner().invoke
    pairs = tmp_path / "pairs.parquet"
    _ok(run(app, ["pairs", "--images", str(folder), "--num-pairs", "15", "--seed", "3",
                  "--out", str(pairs), "--quiet"]))
    input_pairs = pq.read_table(pairs).to_pylist()
    assert len(input_pairs) == 15  # every pair of the six images
    better = {}
    for p in input_pairs:
        qa = quality[str(Path(p["image_a_path"]).resolve())]
        qb = quality[str(Path(p["image_b_path"]).resolve())]
        better[p["pair_id"]] = p["image_a_id"] if qa < qb else p["image_b_id"]
    # both orientations of the pair table occur, or a fixed a/b rule could hide a flip
    a_better = sum(better[p["pair_id"]] == p["image_a_id"] for p in input_pairs)
    assert 0 < a_better < len(input_pairs)

    votes = tmp_path / "votes"
    _ok(run(app, ["vote", "--pairs", str(pairs), "--engine", "piqe", "-k", str(K),
                  "--order", "balanced", "--out", str(votes), "--quiet"]))
    rows = read_votes(votes)
    assert len(rows) == K * len(input_pairs)
    for v in rows:
        shown_first = v["image_b_id"] if v["swapped"] else v["image_a_id"]
        assert v["answer"] == (0 if shown_first == better[v["pair_id"]] else 1), v
        assert v["winner_id"] == better[v["pair_id"]], v
    for pid in better:  # K/2 votes in each shown order
        assert sorted(v["swapped"] for v in rows if v["pair_id"] == pid) == [False] * (K // 2) \
            + [True] * (K // 2)

    prefs = tmp_path / "prefs"
    _ok(run(app, ["aggregate", "--votes", str(votes), "--out", str(prefs), "--quiet"]))
    aggregated = pq.read_table(prefs / "preferences.parquet").to_pylist()
    assert {r["pair_id"] for r in aggregated} == set(better)
    for r in aggregated:
        a_wins = r["image_a_id"] == better[r["pair_id"]]
        assert (r["votes_a"], r["votes_b"]) == ((K, 0) if a_wins else (0, K)), r
        assert r["p_star"] == (1.0 if a_wins else 0.0), r

    repo = tmp_path / "repo"
    _ok(run(app, ["push", "--prefs", str(prefs), "--repo-id", "me/orientation", "--version",
                  "v1", "--local-dir", str(repo), "--quiet"]))
    pushed = load_preferences(repo)
    assert sorted(pushed["pair_id"]) == sorted(better)
    for pid, a_id, p_star in zip(pushed["pair_id"], pushed["image_a_id"], pushed["p_star"],
                                 strict=True):
        assert p_star == (1.0 if a_id == better[pid] else 0.0), pid

    prompts, summary = to_image_prompts(pushed)
    assert summary["pairs_used"] == len(better) and len(prompts) == 2 * len(better)
    cols = {c: prompts[c] for c in ("pair_id", "image_id", "partner_id", "p_star_self")}
    for pid, me, other, p_self in zip(*cols.values(), strict=True):
        assert better[pid] in (me, other) and me != other
        assert p_self == (1.0 if me == better[pid] else 0.0), (pid, me)

    # The reward sees the same preference: for each pair, answers that score the better image
    # 4.5 / 5 and the other 1 / 1.5 agree with p* and earn ~1 (~0 were it reversed).
    reward = fidelity_reward()
    for pid in better:
        rows = [i for i, q in enumerate(cols["pair_id"]) if q == pid]
        columns, completions = {c: [] for c in cols}, []
        for i in rows:
            scores = ("4.50", "5.00") if cols["image_id"][i] == better[pid] else ("1.00", "1.50")
            for s in scores:
                completions.append([{"role": "assistant",
                                     "content": f"<think>ok</think> \\boxed{{{s}}}"}])
                for c in cols:
                    columns[c].append(cols[c][i])
        rewards = reward([None] * len(completions), completions, **columns)
        assert min(rewards) > 0.95, (pid, rewards)
