-- name: create_mixed_votes_view
-- The view `votes` (as create_votes_view.sql) over shards of which some were written before
-- votes_planned, stop_reason, prob_0 and prob_1 existed (a run resumed by a newer evoq):
-- shards are matched by column name, and the older ones read those columns as NULL.
-- (Matching by name reads every shard's schema first: about 0.6 ms per shard, so it is
-- used only for such a mix.)
-- Template: {files} (the shard paths as a SQL list, quoted by
--           evoq_data.aggregate.duckdb.render_sql; DuckDB cannot bind a view's file list).
-- Parameters: none.
CREATE OR REPLACE VIEW votes AS
SELECT
    pair_id, vote_index, image_a_id, image_a_path, image_b_id, image_b_path, swapped, answer,
    winner_id, parse_status, model, model_revision, engine, prompt_id, prompt_sha256,
    temperature, top_p, max_tokens, seed, votes_planned, stop_reason, prob_0, prob_1,
    filename, file_row_number
FROM read_parquet({files}, union_by_name = true, filename = true, file_row_number = true)
