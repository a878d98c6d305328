-- name: check_vote_provenance
-- One row per distinct vote provenance (model, revision, engine, prompt, sampling settings)
-- found in the `votes` relation, with its vote count and seed range. More than one row means
-- the votes mix models, prompts or sampling settings.
-- Reads: votes(model, model_revision, engine, prompt_id, prompt_sha256, temperature, top_p,
--              max_tokens, seed).
-- Parameters: none.
SELECT
    model,
    model_revision,
    engine,
    prompt_id,
    prompt_sha256,
    temperature,
    top_p,
    max_tokens,
    count(*) AS votes,
    min(seed) AS seed_min,
    max(seed) AS seed_max
FROM votes
GROUP BY ALL
ORDER BY votes DESC, model, model_revision, engine, prompt_sha256, temperature, top_p,
         max_tokens
