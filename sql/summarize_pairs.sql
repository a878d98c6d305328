-- name: summarize_pairs
-- Pair and vote totals, ties and the agreement distribution of pair_outcomes: over every
-- pair, or over the kept pairs only (reason IS NULL) when $kept_only is true.
-- A tie is a pair whose outcome is 0 (sampled votes: votes_a = votes_b > 0); a decisive
-- pair has outcome 1 or -1; a pair without a valid vote has no outcome (NULL). Agreement
-- statistics cover pairs with at least one valid vote.
-- Reads: pair_outcomes(votes_a, votes_b, invalid_votes, total_votes, agreement, outcome,
--                      reason).
-- Parameters: $kept_only (BOOLEAN).
SELECT
    count(*) AS pairs,
    count(*) FILTER (WHERE outcome IS NULL) AS pairs_without_valid_votes,
    count(*) FILTER (WHERE outcome = 0) AS ties,
    count(*) FILTER (WHERE outcome <> 0) AS decisive_pairs,
    coalesce(sum(total_votes), 0)::BIGINT AS votes,
    coalesce(sum(votes_a + votes_b), 0)::BIGINT AS valid_votes,
    coalesce(sum(invalid_votes), 0)::BIGINT AS invalid_votes,
    avg(agreement) AS agreement_mean,
    quantile_cont(agreement, 0.1) AS agreement_p10,
    quantile_cont(agreement, 0.25) AS agreement_p25,
    quantile_cont(agreement, 0.5) AS agreement_median,
    quantile_cont(agreement, 0.75) AS agreement_p75,
    quantile_cont(agreement, 0.9) AS agreement_p90
FROM pair_outcomes
WHERE NOT $kept_only OR reason IS NULL
