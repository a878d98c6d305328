-- name: find_invalid_votes
-- Vote rows that evoq-data vote cannot have written (a shard altered afterwards, or a
-- producer that does not follow the vote schema), each with its shard file, row number
-- (from 0), the first rule it breaks and the number of such rows in all shards (bad_rows);
-- at most $limit rows, in file and row order. The rules:
--   swapped is NULL; parse_status is NULL;
--   answer outside {0, 1};
--   parse_status = 'ok' without an answer, or an answer with another parse_status;
--   winner_id naming neither image_a_id nor image_b_id;
--   winner_id not the image the answer chose (image a exactly when (answer = 0) <> swapped;
--     NULL when there is no answer);
--   votes_planned below 1, or a stop_reason other than 'fixed', 'decided', 'confident',
--     'exhausted'; with $adaptive false (the run asked all K: --stop fixed) any stop_reason
--     but 'fixed', with $adaptive true the reason 'fixed';
--   with $logprob false: prob_0 or prob_1 present;
--   with $logprob true: vote_index other than 0 (shown unswapped) or 1 (shown swapped);
--     a valid answer without both probabilities; probabilities outside [0, 1] or not
--     summing to 1 (within 1e-6); an answer that is not the more probable index.
-- NULL stop_reason, votes_planned, prob_0 and prob_1 (shards written before those columns
-- existed) break no rule.
-- Reads: votes(pair_id, vote_index, image_a_id, image_b_id, swapped, answer, winner_id,
--              parse_status, votes_planned, stop_reason, prob_0, prob_1, filename,
--              file_row_number).  Never raw_text.
-- Parameters: $logprob (BOOLEAN), $adaptive (BOOLEAN), $limit (INTEGER).
WITH checked AS (
    SELECT
        filename AS file_name,
        file_row_number,
        pair_id,
        vote_index,
        CASE
            WHEN swapped IS NULL THEN 'swapped is null'
            WHEN parse_status IS NULL THEN 'parse_status is null'
            WHEN answer NOT IN (0, 1) THEN 'answer ' || answer || ' is not 0 or 1'
            WHEN parse_status = 'ok' AND answer IS NULL
                THEN 'parse_status ok without an answer'
            WHEN parse_status <> 'ok' AND answer IS NOT NULL
                THEN 'answer ' || answer || ' with parse_status ' || parse_status
            -- one string comparison per row: the winner the answer names
            WHEN winner_id IS DISTINCT FROM
                 CASE WHEN answer IS NULL THEN NULL
                      WHEN (answer = 0) <> swapped THEN image_a_id ELSE image_b_id END
                THEN CASE
                    WHEN winner_id <> image_a_id AND winner_id <> image_b_id
                        THEN 'winner_id ' || winner_id || ' names neither image of the pair'
                    ELSE 'winner_id ' || coalesce(winner_id, 'NULL')
                         || ' is not the image answer ' || coalesce(answer::VARCHAR, 'NULL')
                         || ' chose (swapped ' || swapped || ')'
                END
            WHEN votes_planned < 1 THEN 'votes_planned ' || votes_planned || ' is below 1'
            WHEN stop_reason NOT IN ('fixed', 'decided', 'confident', 'exhausted')
                THEN 'unknown stop_reason ' || stop_reason
            WHEN NOT $adaptive AND stop_reason <> 'fixed'
                THEN 'stop_reason ' || stop_reason || ' in a run that asked all K votes'
            WHEN $adaptive AND stop_reason = 'fixed'
                THEN 'stop_reason fixed in an adaptive run'
            WHEN NOT $logprob AND (prob_0 IS NOT NULL OR prob_1 IS NOT NULL)
                THEN 'probabilities in a run that sampled votes'
            WHEN $logprob AND (vote_index NOT IN (0, 1) OR swapped <> (vote_index = 1))
                THEN 'vote_index ' || vote_index || ' shown swapped=' || swapped
                     || ' (logprob runs show vote 0 unswapped, vote 1 swapped)'
            WHEN $logprob AND answer IS NOT NULL AND (prob_0 IS NULL OR prob_1 IS NULL)
                THEN 'an answer without both probabilities'
            WHEN $logprob AND (prob_0 < 0 OR prob_0 > 1 OR prob_1 < 0 OR prob_1 > 1
                               OR abs(prob_0 + prob_1 - 1) > 1e-6)
                THEN 'probabilities ' || prob_0 || ', ' || prob_1
                     || ' are not in [0, 1] summing to 1'
            WHEN $logprob AND ((prob_0 > prob_1 AND answer <> 0)
                               OR (prob_1 > prob_0 AND answer <> 1))
                THEN 'answer ' || answer || ' is not the more probable index'
        END AS rule
    FROM votes
)
SELECT
    file_name,
    file_row_number,
    pair_id,
    vote_index,
    rule,
    count(*) OVER () AS bad_rows
FROM checked
WHERE rule IS NOT NULL
ORDER BY file_name, file_row_number
LIMIT $limit
