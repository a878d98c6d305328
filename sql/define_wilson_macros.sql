-- name: define_wilson_macros
-- Defines wilson_low(k, n, z) and wilson_high(k, n, z): the Wilson score interval for a
-- share of k successes out of n trials at normal quantile z (1.959963984540054 for 95%).
-- Both return NULL when n = 0. Run once per connection before the queries that use them.
-- Parameters: none.
CREATE OR REPLACE TEMP MACRO wilson_low(k, n, z) AS
    CASE WHEN n > 0 THEN
        ((k / n + z * z / (2 * n))
         - z * sqrt((k / n) * (1 - k / n) / n + z * z / (4 * n * n)))
        / (1 + z * z / n)
    END;
CREATE OR REPLACE TEMP MACRO wilson_high(k, n, z) AS
    CASE WHEN n > 0 THEN
        ((k / n + z * z / (2 * n))
         + z * sqrt((k / n) * (1 - k / n) / n + z * z / (4 * n * n)))
        / (1 + z * z / n)
    END;
