-- name: scan_votes
-- Reads every column of the `votes` view in every row and counts its values: run on one
-- shard at a time after a read error, to name the shard that cannot be read.
-- Reads: votes (all columns).
-- Parameters: none.
SELECT
    count(*) AS votes,
    count(pair_id) + count(vote_index) + count(image_a_id) + count(image_a_path)
    + count(image_b_id) + count(image_b_path) + count(swapped) + count(answer)
    + count(winner_id) + count(parse_status) + count(model) + count(model_revision)
    + count(engine) + count(prompt_id) + count(prompt_sha256) + count(temperature)
    + count(top_p) + count(max_tokens) + count(seed) + count(votes_planned)
    + count(stop_reason) + count(prob_0) + count(prob_1) AS values
FROM votes
