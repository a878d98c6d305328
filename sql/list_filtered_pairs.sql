-- name: list_filtered_pairs
-- The rows of filtered_out.parquet: every pair a filter removed, with the published columns
-- and the reason, ordered by pair_id.
-- Reads: pair_outcomes.
-- Parameters: none.
SELECT
    pair_id, image_a_id, image_a_path, image_b_id, image_b_path, votes_a, votes_b,
    invalid_votes, total_votes, p_star, vote_fraction_a, agreement, wilson_low, wilson_high,
    votes_first_shown, reason
FROM pair_outcomes
WHERE reason IS NOT NULL
ORDER BY pair_id
