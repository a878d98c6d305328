"""``evoq-data vote``: K raw votes per pair, written to a crash-safe vote store.

:mod:`~evoq_data.votes.plan` decides what to ask (settings, orders, seeds, shards, chunks),
:mod:`~evoq_data.votes.core` asks an engine and writes a chunk, :mod:`~evoq_data.votes.stop`
says when a pair has enough votes, :mod:`~evoq_data.votes.store` owns VOTES_DIR (shards,
manifest, locks, resume), :mod:`~evoq_data.votes.local` and :mod:`~evoq_data.votes.ray` are
the two runners, and :mod:`~evoq_data.votes.run` is the stage that picks one.
"""

from evoq_data.votes.plan import ORDERS, plan_votes, shard_of
from evoq_data.votes.run import run_vote
from evoq_data.votes.store import SHARD_GLOB, done_pair_ids, read_pairs

__all__ = ["ORDERS", "SHARD_GLOB", "done_pair_ids", "plan_votes", "read_pairs", "run_vote",
           "shard_of"]
