-- name: count_pair_votes
-- One row per pair: votes for image a and image b, invalid votes, the pseudo-label p_star,
-- the fraction for image a, the agreement (with its Wilson interval), the valid votes that
-- chose the first-shown image, the pair's outcome, and whether its votes are complete.
-- A vote is valid when answer is 0 or 1. answer indexes the shown order; when swapped is
-- true image b was shown first, so a vote is for image a exactly when (answer = 0) <> swapped.
-- Sampled votes ($logprob false): vote_fraction_a = votes_a / valid votes; agreement =
--   max(votes_a, votes_b) / valid votes with its Wilson interval; outcome =
--   sign(votes_a - votes_b).
-- Probabilities ($logprob true, --mode logprob: one row per shown order holding prob_0 and
--   prob_1): vote_fraction_a = P(a better) = the mean over the pair's rows of prob_0 when
--   a was shown first, else prob_1 (NULL unless the pair has its two rows, both with
--   probabilities); agreement =
--   max(P, 1 - P); no Wilson interval (NULL: nothing was sampled); outcome = sign(P - 0.5);
--   votes_a and votes_b count the more probable answer of each shown order.
-- outcome: 1 (image a preferred), -1 (image b), 0 (a tie), NULL (no valid vote).
-- p_star: hard (paper Eq. 1) = 1 / 0 / 0.5 by outcome; soft = vote_fraction_a; NULL when the
--   pair has no valid vote.
-- Completeness: votes_planned (K; $votes_per_pair for shards written before that column
--   existed) and stop_reason ('fixed' when NULL) per pair. A pair is complete when its
--   vote_index runs 0..n-1 and n = votes_planned, or n < votes_planned and it stopped early
--   (stop_reason 'decided' or 'confident'); with $logprob, when it has exactly vote_index 0
--   and 1. Otherwise problem says why: 'inconsistent' (its rows disagree on votes_planned or
--   stop_reason), 'duplicated' (a vote_index more than once), 'no_first_vote' (no vote 0),
--   'too_many' (a vote_index at or beyond what was planned) or 'missing' (votes missing:
--   missing_votes of them).
-- Needs: define_wilson_macros.sql.
-- A pair without a vote 0 gets NULL ids and paths (and problem 'no_first_vote').
-- Reads: votes(pair_id, vote_index, image_a_id, image_a_path, image_b_id, image_b_path,
--              swapped, answer, votes_planned, stop_reason, prob_0, prob_1).
--        Never raw_text or winner_id.
-- Parameters: $soft (BOOLEAN), $z (DOUBLE, normal quantile of the Wilson interval),
--             $logprob (BOOLEAN), $votes_per_pair (INTEGER, the vote manifest's K).
WITH counts AS (
    SELECT
        pair_id,
        count(*) FILTER (WHERE answer IN (0, 1) AND (answer = 0) <> swapped) AS votes_a,
        count(*) FILTER (WHERE answer IN (0, 1) AND (answer = 0) = swapped) AS votes_b,
        count(*) AS total_votes,
        count(*) FILTER (WHERE answer = 0) AS votes_first_shown,
        min(vote_index) AS min_vote_index,
        max(vote_index) AS max_vote_index,
        min(coalesce(votes_planned, $votes_per_pair)) AS votes_planned,
        max(coalesce(votes_planned, $votes_per_pair)) AS max_votes_planned,
        min(coalesce(stop_reason, 'fixed')) AS stop_reason,
        max(coalesce(stop_reason, 'fixed')) AS max_stop_reason,
        CASE WHEN $logprob AND count(*) = 2 AND count(prob_0) = 2 AND count(prob_1) = 2
             THEN avg(CASE WHEN swapped THEN prob_1 ELSE prob_0 END) END AS prob_a
    FROM votes
    GROUP BY pair_id
), firsts AS (
    -- image ids and paths from each pair's vote 0 only: the filter is pushed into the
    -- Parquet scan, so the string columns of the other votes are never materialised
    SELECT pair_id, image_a_id, image_a_path, image_b_id, image_b_path
    FROM votes
    WHERE vote_index = 0
), shares AS (
    SELECT
        *,
        votes_a + votes_b AS valid_votes,
        greatest(votes_a, votes_b) AS majority_votes,
        CASE WHEN $logprob THEN prob_a
             ELSE votes_a / nullif(votes_a + votes_b, 0) END AS fraction_a,
        CASE WHEN $logprob THEN sign(prob_a - 0.5)
             WHEN votes_a + votes_b > 0 THEN sign(votes_a - votes_b) END AS outcome,
        CASE WHEN $logprob THEN 2 ELSE votes_planned END AS expected_votes,
        NOT $logprob AND stop_reason IN ('decided', 'confident') AS stopped_early
    FROM counts
    LEFT JOIN firsts USING (pair_id)
), checked AS (
    SELECT
        *,
        CASE
            WHEN votes_planned <> max_votes_planned OR stop_reason <> max_stop_reason
                THEN 'inconsistent'
            WHEN total_votes > max_vote_index - min_vote_index + 1 THEN 'duplicated'
            WHEN min_vote_index <> 0 THEN 'no_first_vote'
            WHEN max_vote_index + 1 > expected_votes THEN 'too_many'
            WHEN total_votes < expected_votes
                 AND NOT (stopped_early AND total_votes = max_vote_index + 1) THEN 'missing'
        END AS problem
    FROM shares
)
SELECT
    pair_id,
    image_a_id,
    image_a_path,
    image_b_id,
    image_b_path,
    votes_a,
    votes_b,
    total_votes - valid_votes AS invalid_votes,
    total_votes,
    CASE
        WHEN outcome IS NULL THEN NULL
        WHEN $soft THEN fraction_a
        WHEN outcome > 0 THEN 1.0
        WHEN outcome < 0 THEN 0.0
        ELSE 0.5
    END::DOUBLE AS p_star,
    fraction_a::DOUBLE AS vote_fraction_a,
    CASE WHEN $logprob THEN greatest(prob_a, 1 - prob_a)
         ELSE majority_votes / nullif(valid_votes, 0) END::DOUBLE AS agreement,
    CASE WHEN NOT $logprob THEN wilson_low(majority_votes, valid_votes, $z) END::DOUBLE
        AS wilson_low,
    CASE WHEN NOT $logprob THEN wilson_high(majority_votes, valid_votes, $z) END::DOUBLE
        AS wilson_high,
    votes_first_shown,
    outcome::TINYINT AS outcome,
    min_vote_index,
    max_vote_index,
    votes_planned,
    stop_reason,
    problem,
    CASE WHEN problem = 'missing'
         THEN CASE WHEN stopped_early THEN max_vote_index + 1 - total_votes
                   ELSE expected_votes - total_votes END
    END::BIGINT AS missing_votes
FROM checked
