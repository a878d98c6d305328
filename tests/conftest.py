"""Test settings, and the shared fixtures (tests/fixtures/) registered once for every test.

Everything is made on the spot: no weights or images are downloaded.
"""

from __future__ import annotations

import os

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
