-- name: check_vote_metadata
-- The provenance check from the shards' Parquet footers alone (no vote is read): one row per
-- shard and provenance column (and seed, votes_planned) telling whether the column holds one
-- single value in every row group of that shard (statistics present and exact, min = max,
-- no nulls), that value as text, its numeric min and max over the shard's row groups, and
-- the shard's rows. When every provenance column of every shard has a single value, each
-- shard has one provenance; otherwise the caller runs check_vote_provenance.sql, which scans
-- the columns. (A shard written before votes_planned existed has no row for it.)
-- Reads: vote_metadata (parquet_metadata() of the vote shards).
-- Parameters: none.
SELECT
    file_name,
    path_in_schema AS column_name,
    bool_and(stats_min_value IS NOT NULL
             AND stats_min_value = stats_max_value
             AND coalesce(stats_null_count, 1) = 0
             AND coalesce(min_is_exact, true)
             AND coalesce(max_is_exact, true))
        AND count(DISTINCT stats_min_value) = 1 AS single_value,
    min(stats_min_value) AS value,
    min(TRY_CAST(stats_min_value AS BIGINT)) AS min_number,
    max(TRY_CAST(stats_max_value AS BIGINT)) AS max_number,
    bool_and(stats_min_value IS NOT NULL AND coalesce(stats_null_count, 1) = 0) AS has_stats,
    sum(row_group_num_rows)::BIGINT AS votes
FROM vote_metadata
WHERE path_in_schema IN ('model', 'model_revision', 'engine', 'prompt_id', 'prompt_sha256',
                         'temperature', 'top_p', 'max_tokens', 'seed', 'votes_planned')
GROUP BY file_name, path_in_schema
ORDER BY file_name, column_name
