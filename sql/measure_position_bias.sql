-- name: measure_position_bias
-- Position bias over every pair: the share of valid votes that chose the first-shown image,
-- with its Wilson interval. 0.5 means no bias.
-- Needs: define_wilson_macros.sql.
-- Reads: pair_outcomes(votes_a, votes_b, votes_first_shown).
-- Parameters: $z (DOUBLE).
WITH totals AS (
    SELECT
        coalesce(sum(votes_first_shown), 0)::BIGINT AS first_shown_votes,
        coalesce(sum(votes_a + votes_b), 0)::BIGINT AS valid_votes
    FROM pair_outcomes
)
SELECT
    first_shown_votes,
    valid_votes,
    (first_shown_votes / nullif(valid_votes, 0))::DOUBLE AS share_first_shown,
    wilson_low(first_shown_votes, valid_votes, $z)::DOUBLE AS wilson_low,
    wilson_high(first_shown_votes, valid_votes, $z)::DOUBLE AS wilson_high
FROM totals
