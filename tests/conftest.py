"""Test settings, and the shared fixtures (tests/fixtures/) registered once for every test.

Everything is made on the spot: no weights or images are downloaded.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

# `datasets` keeps an Arrow copy of every folder it loads, under a name made from the folder's
# path; the tests' folders are new each run, so in the user's cache (~/.cache/huggingface)
# every run would leave tens of MB behind. The session (and every command it starts) uses a
# folder of its own, removed at exit.
_DATASETS_CACHE = tempfile.mkdtemp(prefix="evoq-tests-datasets-")
atexit.register(shutil.rmtree, _DATASETS_CACHE, ignore_errors=True)
os.environ["HF_DATASETS_CACHE"] = _DATASETS_CACHE
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

pytest_plugins = [
    "fixtures.hub",
    "fixtures.images",
    "fixtures.models",
    "fixtures.openai_server",
    "fixtures.pairs",
    "fixtures.push",
    "fixtures.ray_cluster",
]


@pytest.fixture(autouse=True, scope="module")
def _environment_restored():
    """Each test module leaves the process environment as it found it. vLLM's in-process
    engine sets process-wide variables (measured: LD_PRELOAD of torch's libgomp,
    LOCAL_WORLD_SIZE=1, VLLM_DIST_IDENT, _RJEM_MALLOC_CONF, ...) that every later subprocess
    of the session would otherwise inherit: accelerate launch, evolve's steps, vote
    commands."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def pytest_collection_modifyitems(config, items):
    """Run the tests that use the session's Ray cluster last, together (in their own order):
    the cluster starts with the first of them and stops when the session ends, so its idle
    daemons no longer share the 2 cores with the training tests that sort between
    test_score_ray.py and test_votes_ray.py."""
    ray = [item for item in items if "cluster" in getattr(item, "fixturenames", ())]
    if ray:
        rest = [item for item in items if "cluster" not in getattr(item, "fixturenames", ())]
        items[:] = rest + ray
