-- name: check_vote_provenance
-- One row per shard and distinct vote provenance in it (model, revision, engine, prompt,
-- sampling settings, votes_planned = K) found in the `votes` relation, with its vote count
-- and seed range. More than one provenance means the votes mix models, prompts, sampling
-- settings or K; a shard is named by its file.
-- Reads: votes(filename, model, model_revision, engine, prompt_id, prompt_sha256,
--              temperature, top_p, max_tokens, seed, votes_planned).
-- Parameters: none.
SELECT
    filename AS file_name,
    model,
    model_revision,
    engine,
    prompt_id,
    prompt_sha256,
    temperature,
    top_p,
    max_tokens,
    votes_planned,
    count(*) AS votes,
    min(seed) AS seed_min,
    max(seed) AS seed_max
FROM votes
GROUP BY ALL
ORDER BY file_name, votes DESC, model, model_revision, engine, prompt_sha256, temperature,
         top_p, max_tokens, votes_planned
