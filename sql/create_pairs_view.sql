-- name: create_pairs_view
-- The view `pairs` over the pairs file the votes were made from: the pairs every complete
-- VOTES_DIR has votes for.
-- Template: {pairs_file} (its path, quoted by evoq_data.aggregate.duckdb.render_sql).
-- Parameters: none.
CREATE OR REPLACE VIEW pairs AS
SELECT pair_id, image_a_id, image_b_id
FROM read_parquet({pairs_file})
