-- name: filter_pairs
-- Every pair of pair_votes, all its columns, with the reason it is filtered out (NULL when
-- it is kept).
-- Reasons (comma-separated when several apply): 'min_valid_votes' when votes_a + votes_b is
-- below $min_valid_votes; 'min_agreement' when agreement is below $min_agreement or the pair
-- has no valid vote. A NULL parameter switches its filter off.
-- Reads: pair_votes(votes_a, votes_b, agreement, ...).
-- Parameters: $min_valid_votes (BIGINT or NULL), $min_agreement (DOUBLE or NULL).
SELECT
    *,
    nullif(concat_ws(',',
        CASE WHEN $min_valid_votes IS NOT NULL AND votes_a + votes_b < $min_valid_votes
             THEN 'min_valid_votes' END,
        CASE WHEN $min_agreement IS NOT NULL
                  AND (agreement IS NULL OR agreement < $min_agreement)
             THEN 'min_agreement' END
    ), '') AS reason
FROM pair_votes
