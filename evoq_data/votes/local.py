"""``evoq-data vote --runner local``: vote the chunks one by one, in this process.

One engine, opened at the first chunk (or the one the stage already opened), closed at the
end; each chunk goes through :meth:`~evoq_data.votes.core.VoteJob.vote`, the call the Ray
runner's actors make too.
"""

from __future__ import annotations

from collections.abc import Iterator

from evoq_data.core.errors import EvoqError
from evoq_data.generation.engines import Engine
from evoq_data.votes.core import ChunkDone, VoteJob


class LocalRunner:
    """Votes in the process that runs ``evoq-data vote``."""

    name = "local"

    def __init__(self, options=None, *, quiet: bool = False) -> None:
        """``options``: Ray settings, refused here (the Ray runner's constructor takes the
        same arguments, so the stage makes either alike)."""
        if options is not None:
            raise EvoqError("Ray settings are for --runner ray, not --runner local")

    def vote(self, job: VoteJob, chunks: list[list[dict]],
             engine: Engine | None = None) -> Iterator[ChunkDone]:
        """Vote and write ``chunks`` in order; yield one :class:`ChunkDone` per shard file.
        ``engine``: one the caller opened and closes (default: opened and closed here)."""
        eng = engine if engine is not None else job.open_engine()
        try:
            for chunk in chunks:
                yield job.vote(eng, chunk)
        finally:
            if engine is None:
                eng.close()
