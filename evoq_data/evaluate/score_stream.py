"""``evoq-data score --schedule streaming``: every image scored on its own clock.

The chunked schedule (:func:`~evoq_data.evaluate.scoring.score_chunk`) asks a chunk's images
one wave at a time, and every image of the chunk waits for the slowest answer of the wave.
Here requests of all images stay in flight: a new image is let in while the engine wants
more; when an image's wave returns, its stop rule (:mod:`evoq_data.evaluate.score_stop`)
decides at once and its next wave is queued at once. Finished images are written as part
files ``--chunk-images`` at a time, so a crash loses the images in flight and those waiting
to fill a part, and a rerun skips the images on disk.

Each image goes through :class:`~evoq_data.evaluate.scoring.ImageSamples`, as in the
chunked loop: same requests, same seeds, same stop, so the rows are those of a chunked run
of the same seed (only ``created_at`` differs). The engine protocol (``submit``, ``poll``,
``wants_more``) is the one ``vote --schedule streaming`` drives (vllm, openai).
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from evoq_data.core.errors import EvoqError
from evoq_data.evaluate.score_stop import ScoreStop
from evoq_data.evaluate.scoring import ImageSamples, samples_table
from evoq_data.generation.schedule import check_streaming
from evoq_data.generation.spec import GenerationSpec


def check_score_schedule(schedule: str, engine: str, runner: str) -> None:
    """Refuse a schedule that does not exist or cannot run with these settings."""
    check_streaming(schedule, engine, runner, "scores")


def stream_scores(eng, images: list, spec: GenerationSpec, rule: ScoreStop, seed: int,
                  per_part: int) -> Iterator[pa.Table]:
    """Score ``images`` with every image on its own clock; yield the rows of ``per_part``
    finished images at a time (in ``images``' order within a part), the last part smaller."""
    order = {im.image_id: i for i, im in enumerate(images)}
    waiting = list(reversed(images))  # popped from the end: the pool's order
    in_flight: dict[str, tuple[ImageSamples, object]] = {}  # request id -> (image, request)
    finished: list[ImageSamples] = []

    def ask(st: ImageSamples) -> None:
        req = st.request()
        ids = eng.submit([req], spec.sampling)
        if len(ids) != 1:
            raise EvoqError(f"engine {spec.engine} queued {len(ids)} of 1 request")
        in_flight[ids[0]] = (st, req)

    def part(done: list[ImageSamples]) -> pa.Table:
        return samples_table(eng, sorted(done, key=lambda st: order[st.image.image_id]))

    while waiting or in_flight:
        while waiting and (not in_flight or eng.wants_more()):  # never none in flight
            ask(ImageSamples(waiting.pop(), spec, rule, seed))
        for rid, texts in eng.poll():
            if rid not in in_flight:
                raise EvoqError(f"engine {spec.engine} answered request {rid} it was not "
                                "asked")
            st, req = in_flight.pop(rid)
            if st.take(req, texts) is None:
                ask(st)
            else:
                finished.append(st)
        if len(finished) >= per_part:
            yield part(finished[:per_part])
            finished = finished[per_part:]
    if finished:
        yield part(finished)
