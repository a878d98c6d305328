"""``evoq-data aggregate``: raw votes -> pseudo-preferences (see docs/aggregate.md).

duckdb (the connection and the sql/ runner), provenance (the input checks), bradley_terry
(the per-image fit), report (stats.json, stats.md, plots) and run (the stage itself).
"""

from evoq_data.aggregate.bradley_terry import fit_bradley_terry
from evoq_data.aggregate.duckdb import sql_quote
from evoq_data.aggregate.run import run_aggregate

__all__ = ["fit_bradley_terry", "run_aggregate", "sql_quote"]
