-- name: count_filter_reasons
-- Pairs and votes removed by the filters, per reason (comma-joined when several applied).
-- Reads: pair_outcomes(reason, total_votes).
-- Parameters: none.
SELECT
    reason,
    count(*) AS pairs,
    sum(total_votes)::BIGINT AS votes
FROM pair_outcomes
WHERE reason IS NOT NULL
GROUP BY reason
ORDER BY reason
