-- name: list_decisive_outcomes
-- The decisive kept pairs (outcome 1 or -1) as (winner_index, loser_index), indexes from
-- image_outcomes.image_index: the comparisons of the Bradley-Terry fit and the edges of the
-- tournament graph whose intransitive triads are counted.
-- Reads: pair_outcomes(image_a_id, image_b_id, outcome, reason),
--        image_outcomes(image_index, image_id).
-- Parameters: none.
SELECT
    CASE WHEN p.outcome > 0 THEN a.image_index ELSE b.image_index END AS winner_index,
    CASE WHEN p.outcome > 0 THEN b.image_index ELSE a.image_index END AS loser_index
FROM pair_outcomes AS p
JOIN image_outcomes AS a ON a.image_id = p.image_a_id
JOIN image_outcomes AS b ON b.image_id = p.image_b_id
WHERE p.reason IS NULL AND p.outcome <> 0
ORDER BY winner_index, loser_index
