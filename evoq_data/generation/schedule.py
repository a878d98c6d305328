"""The ``--schedule`` option both ``vote`` and ``score`` take: which schedules exist and
what streaming needs (the local runner, an engine that takes requests one at a time). The one
place the rule and its messages live; each stage adds its own conditions."""

from __future__ import annotations

from evoq_data.core.errors import EvoqError
from evoq_data.generation.engines import engine_class

SCHEDULES = ("chunked", "streaming")
STREAMING_METHODS = ("submit", "poll", "wants_more")


def check_streaming(schedule: str, engine: str, runner: str, verb: str) -> bool:
    """Refuse a schedule that does not exist or cannot run here; True for streaming.
    ``verb``: what the stage does with the engine ("votes", "scores"), for the message."""
    if schedule not in SCHEDULES:
        raise EvoqError(f"unknown --schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if schedule == "chunked":
        return False
    if runner != "local":
        raise EvoqError(f"--schedule streaming runs in this process; it takes --runner local, "
                        f"not --runner {runner}")
    cls = engine_class(engine)
    if not all(hasattr(cls, m) for m in STREAMING_METHODS):
        raise EvoqError(f"--schedule streaming needs an engine that takes requests one at a "
                        f"time (vllm, openai); engine {engine!r} {verb} --schedule chunked "
                        "only")
    return True
