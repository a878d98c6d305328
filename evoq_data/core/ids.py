"""Identity: content hashes of images and files, and seeds derived from names.

One rule each, used by every stage:

* an image's id is the sha256 of its file bytes (:func:`image_id`), so the same picture under
  two names is one image, and a changed file is another image;
* a file's content hash is the streamed sha256 of its bytes (:func:`file_sha256`);
* every pseudo-random choice (shown order, request seeds, shard of a pair) derives from a
  sha256 of its named parts (:func:`digest_u64`), never from run order or chunking, so
  a resumed or re-sharded run makes the same choices.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

SEED_LIMIT = 2**31 - 1  # the largest seed every engine accepts (int32)


def digest_u64(*parts) -> int:
    """A 64-bit number derived from ``parts`` (joined by ':' and hashed with sha256)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def request_seed(*parts, n: int) -> int:
    """The seed of a request of ``n`` samples: sample i uses seed + i (vLLM's convention),
    so the seed stays below ``SEED_LIMIT - n`` and every seed + i fits an int32."""
    return digest_u64(*parts) % (SEED_LIMIT - n)


def image_id(data: bytes) -> str:
    """The id of an image: the sha256 of its file bytes (hex)."""
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes (hex), read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(2**20), b""):
            h.update(block)
    return h.hexdigest()
