-- name: list_images
-- The rows of images.parquet but bt_score (added from the fit): one per image of the kept
-- pairs, ordered by image_index (= image_id order).
-- Reads: image_outcomes.
-- Parameters: none.
SELECT image_id, image_path, wins, losses, ties, comparisons, win_rate
FROM image_outcomes
ORDER BY image_index
