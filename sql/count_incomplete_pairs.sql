-- name: count_incomplete_pairs
-- The pairs whose votes are not complete (see count_pair_votes.sql), per problem
-- ('inconsistent', 'duplicated', 'no_first_vote', 'too_many', 'missing'): how many pairs,
-- how many votes they miss (problem 'missing' only), and the first such pair as an example.
-- No row when every voted pair is complete. (A pair whose vote 0 is duplicated has one row
-- per copy in pair_outcomes: pairs are counted once.)
-- Reads: pair_outcomes(pair_id, problem, missing_votes).
-- Parameters: none.
SELECT
    problem,
    count(DISTINCT pair_id) AS pairs,
    coalesce(sum(missing_votes), 0)::BIGINT AS missing_votes,
    min(pair_id) AS example_pair_id
FROM pair_outcomes
WHERE problem IS NOT NULL
GROUP BY problem
ORDER BY problem
