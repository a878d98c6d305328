"""The PIQE judge: deterministic answers in a VLM's text form, honest ties, score mapping."""

from __future__ import annotations

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
