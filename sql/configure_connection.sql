-- name: configure_connection
-- Sets up a DuckDB connection for streaming aggregation within a memory budget: $threads
-- worker threads, a memory limit of $memory_limit (DuckDB spills to $temp_directory beyond
-- it), no insertion order to preserve, no progress bar (it would write to stdout) and no
-- external file cache (the votes are read once). One statement per line; each is run on
-- its own with the parameters it names.
-- Parameters: $threads (INTEGER), $memory_limit (VARCHAR, e.g. '1GB'),
--             $temp_directory (VARCHAR, a folder path; NULL keeps DuckDB's default).
SET threads = $threads;
SET memory_limit = $memory_limit;
SET temp_directory = coalesce($temp_directory, current_setting('temp_directory'));
SET preserve_insertion_order = false;
SET enable_progress_bar = false;
SET enable_external_file_cache = false;
