-- name: count_images
-- The number of images of the kept pairs (rows of image_outcomes).
-- Reads: image_outcomes.
-- Parameters: none.
SELECT count(*) AS images
FROM image_outcomes
