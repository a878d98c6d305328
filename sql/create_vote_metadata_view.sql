-- name: create_vote_metadata_view
-- The view `vote_metadata`: the Parquet footer metadata of every vote shard (one row per
-- shard, row group and column, with its statistics), read without reading any vote.
-- Template: {files} (the shard paths as a SQL list, quoted by
--           evoq_data.aggregate.duckdb.render_sql).
-- Parameters: none.
CREATE OR REPLACE VIEW vote_metadata AS
SELECT * FROM parquet_metadata({files})
