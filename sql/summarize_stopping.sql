-- name: summarize_stopping
-- What the votes cost, per stop_reason over every voted pair: pairs, votes planned (sum of
-- votes_planned, K per pair), votes used (rows), and votes saved: votes_planned - votes used
-- summed over the pairs that stopped early ('decided', 'confident'), and, with $logprob,
-- over every complete pair (its two forward passes replace the K planned votes). Votes
-- missing from an incomplete pair are not saved (count_incomplete_pairs.sql counts them).
-- Reads: pair_outcomes(stop_reason, votes_planned, total_votes, problem).
-- Parameters: $logprob (BOOLEAN).
SELECT
    stop_reason,
    count(*) AS pairs,
    coalesce(sum(votes_planned), 0)::BIGINT AS votes_planned,
    coalesce(sum(total_votes), 0)::BIGINT AS votes_used,
    coalesce(sum(votes_planned - total_votes) FILTER (
        WHERE problem IS NULL AND ($logprob OR stop_reason IN ('decided', 'confident'))
    ), 0)::BIGINT AS votes_saved
FROM pair_outcomes
GROUP BY stop_reason
ORDER BY stop_reason
