-- name: read_decisive_outcomes
-- The comparisons of the Bradley-Terry fit: (winner_index, loser_index) of every decisive
-- kept pair, as stored by list_decisive_outcomes.sql.
-- Reads: decisive_outcomes(winner_index, loser_index).
-- Parameters: none.
SELECT winner_index, loser_index
FROM decisive_outcomes
