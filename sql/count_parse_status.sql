-- name: count_parse_status
-- Votes per parse_status ('ok' is a valid answer; every other status is a parse failure).
-- Reads: votes(parse_status).
-- Parameters: none.
SELECT
    parse_status,
    count(*) AS votes
FROM votes
GROUP BY parse_status
ORDER BY votes DESC, parse_status
