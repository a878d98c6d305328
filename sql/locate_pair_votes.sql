-- name: locate_pair_votes
-- Where the votes of pair $pair_id are: one row per shard file holding some, with their
-- count, vote_index range and K (votes_planned), so that an error can name the file.
-- Reads: votes(pair_id, vote_index, votes_planned, filename).
-- Parameters: $pair_id (VARCHAR).
SELECT
    filename AS file_name,
    count(*) AS votes,
    min(vote_index) AS min_vote_index,
    max(vote_index) AS max_vote_index,
    max(votes_planned) AS votes_planned
FROM votes
WHERE pair_id = $pair_id
GROUP BY filename
ORDER BY filename
