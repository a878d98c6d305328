"""Output paths that cannot be used, and resource options that make no sense: one line each."""

from __future__ import annotations

import pytest

from evoq_data.core.errors import EvoqError


def test_output_folder_that_is_a_file_is_one_line(tmp_path, image_pool):
    from evoq_data.aggregate.run import run_aggregate
    from evoq_data.core.io import make_output_dir
    from evoq_data.images.distort import run_distort

    a_file = tmp_path / "taken"
    a_file.write_text("x")
    with pytest.raises(EvoqError, match="--out .*taken is an existing file"):
        make_output_dir(a_file)
    with pytest.raises(EvoqError, match="cannot create the --out folder"):
        make_output_dir(a_file / "below")
    with pytest.raises(EvoqError, match="existing file"):
        run_distort(str(image_pool), a_file, quiet=True)
    with pytest.raises(EvoqError, match="--memory-limit 'lots'"):
        from evoq_data.aggregate.run import connect

        connect(1, "lots")
    with pytest.raises(EvoqError, match="--threads must be at least 1"):
        connect(0, "1GB")
    with pytest.raises(EvoqError, match="votes folder not found"):
        run_aggregate(tmp_path / "no-votes", a_file)


def test_push_local_dir_that_is_a_file(tmp_path):
    from fixtures.push import make_prefs_dir

    from evoq_data.publish.push import run_push

    prefs = make_prefs_dir(tmp_path / "run")
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    with pytest.raises(EvoqError, match="--local-dir .*taken is an existing file"):
        run_push(prefs, "me/x", "v1", local_dir=a_file, quiet=True)
