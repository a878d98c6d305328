-- name: count_image_outcomes
-- One row per image of the kept pairs (reason IS NULL): wins, losses and ties by pair
-- outcome (a pair is one comparison, decided by its outcome whatever the label mode: the
-- majority of sampled votes, or P(a better) against 0.5 for probabilities),
-- comparisons = wins + losses + ties (pairs with a valid vote), and
-- win_rate = (wins + ties / 2) / comparisons (NULL without comparisons), i.e. the image's
-- mean hard p* over its pairs. image_index numbers the images 0.. in image_id order.
-- Reads: pair_outcomes(image_a_id, image_a_path, image_b_id, image_b_path, outcome, reason).
-- Parameters: none.
WITH sides AS (
    SELECT image_a_id AS image_id, image_a_path AS image_path, outcome AS mine
    FROM pair_outcomes WHERE reason IS NULL
    UNION ALL
    SELECT image_b_id, image_b_path, -outcome
    FROM pair_outcomes WHERE reason IS NULL
), per_image AS (
    SELECT
        image_id,
        min(image_path) AS image_path,
        count(*) FILTER (WHERE mine > 0) AS wins,
        count(*) FILTER (WHERE mine < 0) AS losses,
        count(*) FILTER (WHERE mine = 0) AS ties
    FROM sides
    GROUP BY image_id
)
SELECT
    (row_number() OVER (ORDER BY image_id) - 1)::BIGINT AS image_index,
    image_id,
    image_path,
    wins,
    losses,
    ties,
    wins + losses + ties AS comparisons,
    ((wins + ties / 2) / nullif(wins + losses + ties, 0))::DOUBLE AS win_rate
FROM per_image
