-- name: find_incomplete_pairs
-- Pairs whose votes are not exactly vote_index 0 .. total_votes - 1 once each, counted by
-- extremes: duplicated shards or missing votes show up here. Returns up to $limit examples.
-- Reads: pair_outcomes(pair_id, total_votes, min_vote_index, max_vote_index).
-- Parameters: $limit (INTEGER).
SELECT
    pair_id,
    total_votes,
    min_vote_index,
    max_vote_index
FROM pair_outcomes
WHERE min_vote_index <> 0 OR max_vote_index + 1 <> total_votes
ORDER BY pair_id
LIMIT $limit
