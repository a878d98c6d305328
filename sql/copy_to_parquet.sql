-- name: copy_to_parquet
-- Writes the rows of another sql/ query to a Parquet file: zstd level 1 (half the CPU of
-- the default level for a few percent more bytes). The caller writes to a temp file and
-- renames it into place (evoq_data.aggregate.duckdb.copy_parquet).
-- Template: {query} (the text of another sql/ file), {path} (the output path, quoted by
--           evoq_data.aggregate.duckdb.render_sql; COPY cannot bind it).
-- Parameters: those of {query}.
COPY (
{query}
) TO {path} (FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1)
