-- name: count_intransitive_triads
-- Directed 3-cycles (x beat y, y beat z, z beat x) among the decisive outcomes, each cycle
-- counted once (from its smallest image index). Repeated outcomes between the same two images
-- count once.
-- Reads: decisive_outcomes(winner_index, loser_index).
-- Parameters: none.
WITH edges AS (
    SELECT DISTINCT winner_index AS w, loser_index AS l FROM decisive_outcomes
)
SELECT count(*)::BIGINT AS intransitive_triads
FROM edges AS e1
JOIN edges AS e2 ON e2.w = e1.l
JOIN edges AS e3 ON e3.w = e2.l AND e3.l = e1.w
WHERE e1.w < e2.w AND e1.w < e3.w
