"""Fault injection for the Ray runner's tests: a vote worker that SIGKILLs itself, and one
whose engine cannot start.

:class:`KillingWorker` is :class:`~evoq_data.votes.ray.VoteWorker` with a fault: at chunk
``fault["chunk"]``, before voting it (``when="before_write"``: nothing of the chunk is on
disk) or after its shard file is renamed into place (``"after_write"``: the driver never
hears of it), it kills its own process with SIGKILL, ``fault["times"]`` times in all
(default once). The kills so far are counted in the file ``fault["marker"]``, which outlives
the actor.

:func:`install` puts it in place of the product's worker for one test: this module is
pickled by value (Ray ships the class, with the fault set on it, to the actors, which need
not import anything from tests/).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from evoq_data.core.errors import EvoqError
from evoq_data.votes import ray as votes_ray
from evoq_data.votes.core import ChunkDone


class KillingWorker(votes_ray.VoteWorker):
    fault: dict = {}

    def _kill(self, chunk: int, when: str) -> None:
        f = self.fault
        if f.get("chunk") != chunk or f.get("when") != when:
            return
        marker = Path(f["marker"])
        kills = int(marker.read_text() or 0) if marker.exists() else 0
        if kills >= f.get("times", 1):
            return
        marker.write_text(str(kills + 1))
        os.kill(os.getpid(), signal.SIGKILL)

    def vote_chunk(self, chunk: int, pairs: list[dict]) -> ChunkDone:
        self._kill(chunk, "before_write")
        done = super().vote_chunk(chunk, pairs)
        self._kill(chunk, "after_write")
        return done


def install(monkeypatch, *, marker: Path, chunk: int, when: str, times: int = 1) -> None:
    """Make the Ray runner use a :class:`KillingWorker` with this fault (undone after the
    test by ``monkeypatch``)."""
    import sys

    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    monkeypatch.setattr(KillingWorker, "fault", {"marker": str(marker), "chunk": chunk,
                                                 "when": when, "times": times})
    monkeypatch.setattr(votes_ray, "VoteWorker", KillingWorker)


START_FAILURE = "cannot load model judge/: injected by tests/ray_faults.py"


class StartFailingWorker(votes_ray.VoteWorker):
    """A worker whose engine fails to open, as a real one does on a checkpoint without
    weights: the product's own error type, raised in the actor's constructor."""

    def __init__(self, job, cwd: str) -> None:
        raise EvoqError(START_FAILURE)


def install_start_failure(monkeypatch) -> None:
    """Make the Ray runner use a :class:`StartFailingWorker` (undone after the test)."""
    import sys

    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    monkeypatch.setattr(votes_ray, "VoteWorker", StartFailingWorker)
