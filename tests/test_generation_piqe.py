"""The PIQE judge: deterministic answers in a VLM's text form, honest ties, score mapping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from evoq_data.generation.engines import GenRequest, Sampling, get_engine
from evoq_data.generation.engines.piqe import piqe_to_score
from evoq_data.generation.parse import parse_compare, parse_score
from evoq_data.generation.prompts import compare_prompt, score_prompt

pytest.importorskip("pypiqe")


@pytest.fixture(scope="module")
def photo_pair(tmp_path_factory):
    """A real photo and a strongly blurred copy (PIQE must prefer the photo)."""
    from skimage import data

    folder = tmp_path_factory.mktemp("piqe")
    im = Image.fromarray(data.astronaut()).resize((160, 160))
    clean, blurred = folder / "clean.png", folder / "blurred.png"
    im.save(clean)
    im.filter(ImageFilter.GaussianBlur(2.5)).save(blurred)
    return str(clean), str(blurred)


@pytest.mark.parametrize(("piqe", "score"), [(0, 5.0), (100, 1.0), (50, 3.0), (12.345, 4.51),
                                              (-3, 5.0), (140, 1.0)])
def test_piqe_to_score(piqe, score):
    assert piqe_to_score(piqe) == score


def test_compare_answers_parse_to_the_lower_piqe(photo_pair):
    clean, blurred = photo_pair
    eng = get_engine("piqe", None)
    assert eng.piqe(clean) < eng.piqe(blurred)
    for reasoning in (True, False):
        prompt = compare_prompt(reasoning)
        out = eng.generate([GenRequest((clean, blurred), prompt, n=3, seed=1),
                            GenRequest((blurred, clean), prompt, n=2, seed=9)], Sampling())
        assert [len(o) for o in out] == [3, 2]
        assert len(set(out[0])) == 1 and len(set(out[1])) == 1  # deterministic
        assert parse_compare(out[0][0], reasoning) == (0, "ok")
        assert parse_compare(out[1][0], reasoning) == (1, "ok")
    assert "PIQE first=" in out[0][0] or out[0][0] == "0"


def test_tie_is_an_invalid_vote_not_a_guess(photo_pair):
    clean, _ = photo_pair
    eng = get_engine("piqe", None)
    [[with_box]] = eng.generate([GenRequest((clean, clean), compare_prompt(True), 1, 0)],
                                Sampling())
    [[direct]] = eng.generate([GenRequest((clean, clean), compare_prompt(False), 1, 0)],
                              Sampling())
    assert "tie" in with_box
    assert parse_compare(with_box, True) == (None, "no_box")
    assert parse_compare(direct, False) == (None, "no_answer")


def test_score_answer_is_the_mapped_piqe(photo_pair):
    clean, blurred = photo_pair
    eng = get_engine("piqe", None)
    out = eng.generate([GenRequest((clean,), score_prompt(True), 2, 0),
                        GenRequest((blurred,), score_prompt(True), 2, 0)], Sampling())
    values = [parse_score(o[0], True) for o in out]
    assert values[0] == (piqe_to_score(eng.piqe(clean)), "ok")
    assert values[1] == (piqe_to_score(eng.piqe(blurred)), "ok")
    assert values[0][0] > values[1][0]
    assert eng.model == "piqe" and eng.model_revision.startswith("pypiqe==")


def test_piqe_matches_the_library_on_bgr_input(photo_pair):
    from pypiqe import piqe

    clean, _ = photo_pair
    rgb = np.asarray(Image.open(clean).convert("RGB"))
    assert get_engine("piqe", None).piqe(clean) == pytest.approx(
        piqe(np.ascontiguousarray(rgb[:, :, ::-1]))[0])


def test_random_crop_votes_disagree_and_are_deterministic(photo_pair):
    clean, blurred = photo_pair
    eng = get_engine("piqe", None, random_crop=0.5)
    assert eng.model == "piqe+random_crop=0.5"
    prompt = compare_prompt(True)
    # two images close in quality: the slightly blurred photo against the photo itself
    from PIL import Image, ImageFilter

    near = str(Path(clean).with_name("near.png"))
    Image.open(clean).filter(ImageFilter.GaussianBlur(0.7)).save(near)
    [votes] = eng.generate([GenRequest((clean, near), prompt, 32, 5)], Sampling())
    answers = [parse_compare(v, True)[0] for v in votes]
    assert {0, 1} <= set(answers)  # random crops disagree, as a sampling VLM's votes do
    assert "random crops keeping 0.5 of each side" in votes[0]
    # sample i uses seed + i alone: a request for samples 7..9 repeats them exactly
    [again] = get_engine("piqe", None, random_crop=0.5).generate(
        [GenRequest((clean, near), prompt, 3, 12)], Sampling())
    assert again == votes[7:10]
    # the clearly worse image still loses almost every vote
    [far] = eng.generate([GenRequest((clean, blurred), prompt, 32, 5)], Sampling())
    assert sum(parse_compare(v, True)[0] == 0 for v in far) >= 28


def test_random_crop_of_the_whole_image_is_the_library_score(photo_pair):
    import numpy as np
    from pypiqe import piqe

    from evoq_data.generation.engines.piqe import piqe_blocks, pooled_piqe

    clean, blurred = photo_pair
    eng = get_engine("piqe", None, random_crop=1)
    for path in (clean, blurred):
        assert eng.crop_piqe(path, np.random.default_rng(0)) == get_engine("piqe", None).piqe(path)
    # a block-aligned crop is pooled from the crop's blocks: check one by hand
    rgb = np.asarray(Image.open(clean).convert("RGB"))[:, :, ::-1].copy()
    dist, active = piqe_blocks(rgb)
    assert dist.shape == (10, 10)  # 160 px / 16
    window = [(i, j) for i in range(2, 9) for j in range(1, 8) if active[i, j]]
    want = (sum(dist[i, j] for i, j in window) + 1) / (1 + len(window)) * 100
    assert pooled_piqe(dist, active, 2, 1, 7, 7) == pytest.approx(want, rel=1e-12)
    assert pooled_piqe(dist, active, 0, 0, 10, 10) == pytest.approx(piqe(rgb)[0], rel=1e-12)


@pytest.mark.parametrize("value", [0, -0.5, 1.5, "half", True])
def test_random_crop_out_of_range_is_refused(value):
    from evoq_data.core.errors import EvoqError

    with pytest.raises(EvoqError, match=r"random_crop must be a number in \(0, 1\]"):
        get_engine("piqe", None, random_crop=value)
