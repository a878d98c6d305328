-- name: check_pair_coverage
-- The voted pairs against the pairs file the votes were made from: how many pairs it lists,
-- how many of them have no vote (missing), how many voted pairs it does not list (unlisted)
-- and how many voted pairs name other images than it does (changed), each with its first
-- pair_id as an example. One row.
-- Reads: pairs(pair_id, image_a_id, image_b_id), pair_outcomes(pair_id, image_a_id,
--        image_b_id).
-- Parameters: none.
WITH joined AS (
    SELECT
        p.pair_id AS listed_id,
        o.pair_id AS voted_id,
        p.image_a_id IS DISTINCT FROM o.image_a_id
            OR p.image_b_id IS DISTINCT FROM o.image_b_id AS changed
    FROM pairs AS p
    FULL OUTER JOIN pair_outcomes AS o ON o.pair_id = p.pair_id
)
SELECT
    count(listed_id) AS pairs_listed,
    count(*) FILTER (WHERE voted_id IS NULL) AS pairs_missing,
    min(listed_id) FILTER (WHERE voted_id IS NULL) AS example_missing,
    count(*) FILTER (WHERE listed_id IS NULL) AS pairs_unlisted,
    min(voted_id) FILTER (WHERE listed_id IS NULL) AS example_unlisted,
    count(*) FILTER (WHERE listed_id IS NOT NULL AND voted_id IS NOT NULL AND changed)
        AS pairs_changed,
    min(listed_id) FILTER (WHERE listed_id IS NOT NULL AND voted_id IS NOT NULL AND changed)
        AS example_changed
FROM joined
