"""Shared fixtures: the tiny offline Qwen2.5-VL and a small image pool.

Everything here is made on the spot: no weights or images are downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory) -> Path:
    """A tiny random-weight Qwen2.5-VL checkpoint folder (built once per session)."""
    from evoq_data.testing.tiny_vlm import build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("tiny-vlm") / "model")


@pytest.fixture(scope="session")
def answering_vlm(tiny_vlm, tmp_path_factory) -> Path:
    """The tiny model biased to answer "0" and stop (``sequence_bias`` in its generation
    config): with ``reasoning=False`` every vote is valid, for the image shown first. (A
    random-weight model never writes a readable answer, and push refuses a dataset without
    one valid vote.)"""
    import json
    import shutil

    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("answering") / "model"
    shutil.copytree(tiny_vlm, out)
    tok = AutoTokenizer.from_pretrained(out)
    zero, eos = tok.encode("0")[0], tok.eos_token_id
    path = out / "generation_config.json"
    config = json.loads(path.read_text())
    config["sequence_bias"] = [[[zero], 50.0], [[zero, eos], 100.0]]
    path.write_text(json.dumps(config, indent=2))
    return out


def make_images(folder: Path, n: int, seed: int = 0, size=(48, 40)) -> list[Path]:
    """Write ``n`` distinct random RGB images (png/jpg alternating) to ``folder``."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        arr = (rng.random((size[1], size[0], 3)) * 255).astype("uint8")
        path = folder / (f"img{i:03d}.png" if i % 2 == 0 else f"sub/img{i:03d}.jpg")
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(path)
        paths.append(path)
    return paths


HUB_TOKEN = "hf_loopbackSECRETtoken0123456789"


@pytest.fixture
def hub(monkeypatch):
    """A loopback Hub (tests/hub_server.py) on 127.0.0.1, with the clients pointed at it:
    no Xet, not offline, HF_TOKEN = HUB_TOKEN, short upload backoff. Stopped after the test."""
    import huggingface_hub.constants as hc
    from hub_server import HubServer

    from evoq_data.publish import hub as publish

    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hc, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    monkeypatch.setattr(publish, "BACKOFF_S", 0.01)
    with HubServer(token=HUB_TOKEN) as server:
        yield server


@pytest.fixture
def image_pool(tmp_path) -> Path:
    """A folder of 6 distinct small images, some in a subfolder."""
    folder = tmp_path / "pool"
    make_images(folder, 6)
    return folder


def assert_user_error(result, *fragments: str) -> str:
    """A CliRunner result stopped by an EvoqError: exit 1 and a one-line message holding
    every fragment. Returns the message."""
    from evoq_data.core.errors import EvoqError

    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, EvoqError), repr(result.exception)
    message = str(result.exception)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def read_votes(votes_dir) -> list[dict]:
    """Every vote row of a VOTES_DIR, sorted by (pair_id, vote_index)."""
    import pyarrow.parquet as pq

    rows = []
    for shard in sorted(Path(votes_dir).glob("votes-*.parquet")):
        rows += pq.read_table(shard).to_pylist()
    return sorted(rows, key=lambda r: (r["pair_id"], r["vote_index"]))


def spec(engine: str, model=None, *, temperature: float = 1.0, top_p: float = 1.0,
         max_tokens: int = 1024, reasoning: bool = True, engine_args: dict | None = None,
         model_revision: str | None = None):
    """A GenerationSpec in one call (the tests' shorthand)."""
    from evoq_data.generation.engines import Sampling
    from evoq_data.generation.spec import GenerationSpec

    return GenerationSpec(engine=engine, model=None if model is None else str(model),
                          model_revision=model_revision,
                          sampling=Sampling(temperature=temperature, top_p=top_p,
                                            max_tokens=max_tokens),
                          reasoning=reasoning, engine_args=dict(engine_args or {}))
