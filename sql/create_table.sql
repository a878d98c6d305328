-- name: create_table
-- Stores the rows of another sql/ query as the table {table} of the in-memory database (a
-- plain table, not TEMP: TEMP tables are private to one connection, and the preferences are
-- written on a second cursor).
-- Template: {table} (a table name chosen by the code), {query} (the text of another sql/
--           file, with its inputs composed as CTEs by evoq_data.aggregate.duckdb.materialise).
-- Parameters: those of {query}.
CREATE OR REPLACE TABLE {table} AS
{query}
