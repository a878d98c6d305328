-- name: create_votes_view
-- The view `votes` over the vote shards: the columns the aggregation reads (never raw_text),
-- plus each row's shard file (filename) and row number in that file (file_row_number, from
-- 0) so that a check can name the file and row of a bad vote. Every shard has the columns
-- votes_planned, stop_reason, prob_0 and prob_1 (otherwise create_mixed_votes_view.sql or
-- create_legacy_votes_view.sql).
-- Template: {files} (the shard paths as a SQL list, quoted by
--           evoq_data.aggregate.duckdb.render_sql; DuckDB cannot bind a view's file list).
-- Parameters: none.
CREATE OR REPLACE VIEW votes AS
SELECT
    pair_id, vote_index, image_a_id, image_a_path, image_b_id, image_b_path, swapped, answer,
    winner_id, parse_status, model, model_revision, engine, prompt_id, prompt_sha256,
    temperature, top_p, max_tokens, seed, votes_planned, stop_reason, prob_0, prob_1,
    filename, file_row_number
FROM read_parquet({files}, filename = true, file_row_number = true)
