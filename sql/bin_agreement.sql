-- name: bin_agreement
-- Histogram of pair agreement over [0.5, 1] in $bins equal-width bins (agreement is always
-- at least 0.5). Bin i covers [0.5 + i * w, 0.5 + (i + 1) * w) with w = 0.5 / $bins, the last
-- bin includes 1.0 (a 1e-9 tolerance keeps shares such as 7/10 out of the bin below them
-- despite floating-point error). Every bin is returned, empty ones with 0. Pairs without a
-- valid vote have no agreement and are not binned.
-- Reads: pair_outcomes(agreement, reason).
-- Parameters: $bins (INTEGER), $kept_only (BOOLEAN).
WITH binned AS (
    SELECT least(floor((agreement - 0.5) * 2 * $bins + 1e-9), $bins - 1)::BIGINT AS bin
    FROM pair_outcomes
    WHERE agreement IS NOT NULL AND (NOT $kept_only OR reason IS NULL)
)
SELECT
    b.bin,
    0.5 + b.bin * 0.5 / $bins AS bin_low,
    0.5 + (b.bin + 1) * 0.5 / $bins AS bin_high,
    count(binned.bin) AS pairs
FROM range($bins) AS b(bin)
LEFT JOIN binned ON binned.bin = b.bin
GROUP BY b.bin
ORDER BY b.bin
