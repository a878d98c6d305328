-- name: create_legacy_votes_view
-- The view `votes` (as create_votes_view.sql) over shards that were all written before the
-- columns votes_planned, stop_reason, prob_0 and prob_1 existed: those read as NULL (the
-- aggregation then takes K from the vote manifest and every pair as stopped 'fixed').
-- Template: {files} (the shard paths as a SQL list, quoted by
--           evoq_data.aggregate.duckdb.render_sql).
-- Parameters: none.
CREATE OR REPLACE VIEW votes AS
SELECT
    pair_id, vote_index, image_a_id, image_a_path, image_b_id, image_b_path, swapped, answer,
    winner_id, parse_status, model, model_revision, engine, prompt_id, prompt_sha256,
    temperature, top_p, max_tokens, seed, NULL::INTEGER AS votes_planned,
    NULL::VARCHAR AS stop_reason, NULL::DOUBLE AS prob_0, NULL::DOUBLE AS prob_1,
    filename, file_row_number
FROM read_parquet({files}, filename = true, file_row_number = true)
