"""``evoq-data vote``: K raw votes per pair, written to a crash-safe vote store.

:mod:`evoq_data.votes.run` plans and asks for the votes; :mod:`evoq_data.votes.store` owns
VOTES_DIR (shards, manifest, locks, resume).
"""

from evoq_data.votes.run import ORDERS, plan_votes, run_vote, shard_of
from evoq_data.votes.store import SHARD_GLOB, done_pair_ids, read_pairs

__all__ = ["ORDERS", "SHARD_GLOB", "done_pair_ids", "plan_votes", "read_pairs", "run_vote",
           "shard_of"]
