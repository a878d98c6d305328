-- name: count_pair_votes
-- One row per pair: votes for image a and image b, invalid votes, the pseudo-label p_star,
-- the vote fraction for a, the agreement (majority share of valid votes) with its Wilson
-- interval, and the valid votes that chose the first-shown image.
-- A vote is valid when answer is 0 or 1. answer indexes the shown order; when swapped is
-- true image b was shown first, so a vote is for image a exactly when (answer = 0) <> swapped.
-- p_star: hard (paper Eq. 1) = 1 if votes_a > votes_b, 0 if fewer, 0.5 on a tie;
--         soft = votes_a / valid votes. NULL when the pair has no valid vote.
-- Needs: define_wilson_macros.sql.
-- A pair without a vote 0 gets NULL ids and paths (find_incomplete_pairs.sql reports it).
-- Reads: votes(pair_id, vote_index, image_a_id, image_a_path, image_b_id, image_b_path,
--              swapped, answer).  Never raw_text.
-- Parameters: $soft (BOOLEAN), $z (DOUBLE, normal quantile of the Wilson interval).
WITH counts AS (
    SELECT
        pair_id,
        count(*) FILTER (WHERE answer IN (0, 1) AND (answer = 0) <> swapped) AS votes_a,
        count(*) FILTER (WHERE answer IN (0, 1) AND (answer = 0) = swapped) AS votes_b,
        count(*) AS total_votes,
        count(*) FILTER (WHERE answer = 0) AS votes_first_shown,
        min(vote_index) AS min_vote_index,
        max(vote_index) AS max_vote_index
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
        greatest(votes_a, votes_b) AS majority_votes
    FROM counts
    LEFT JOIN firsts USING (pair_id)
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
        WHEN valid_votes = 0 THEN NULL
        WHEN $soft THEN votes_a / valid_votes
        WHEN votes_a > votes_b THEN 1.0
        WHEN votes_a < votes_b THEN 0.0
        ELSE 0.5
    END::DOUBLE AS p_star,
    (votes_a / nullif(valid_votes, 0))::DOUBLE AS vote_fraction_a,
    (majority_votes / nullif(valid_votes, 0))::DOUBLE AS agreement,
    wilson_low(majority_votes, valid_votes, $z)::DOUBLE AS wilson_low,
    wilson_high(majority_votes, valid_votes, $z)::DOUBLE AS wilson_high,
    votes_first_shown,
    min_vote_index,
    max_vote_index
FROM shares
