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


# --- the shared helpers of core/ ------------------------------------------------------------

@pytest.mark.parametrize("content, why", [
    (b"{not json", "is not readable JSON"),
    (b"\xff\xfe{}", "is not readable JSON"),  # not UTF-8
    (b"[1, 2]", "does not hold a JSON object"),
])
def test_read_json_names_the_file(tmp_path, content, why):
    from evoq_data.core.io import read_json
    from evoq_data.core.manifests import read_manifest

    path = tmp_path / "votes" / "manifest.json"
    path.parent.mkdir()
    path.write_bytes(content)
    with pytest.raises(EvoqError) as info:
        read_json(path, "vote manifest")
    assert str(info.value).startswith(f"vote manifest {path} {why}")
    assert "\n" not in str(info.value)
    with pytest.raises(EvoqError, match=why):
        read_manifest(tmp_path / "votes")  # a folder's manifest is its manifest.json
    assert read_json(tmp_path / "absent.json", missing_ok=True) is None
    with pytest.raises(EvoqError, match="stats not found: .*absent.json"):
        read_json(tmp_path / "absent.json", "stats")


def test_manifest_path_is_one_rule(tmp_path):
    from evoq_data.core.manifests import manifest_path

    assert manifest_path(tmp_path / "r1" / "pairs.parquet") == tmp_path / "r1" / "pairs.manifest.json"
    assert manifest_path(tmp_path / "votes") == tmp_path / "votes" / "manifest.json"
    (tmp_path / "odd.parquet").mkdir()  # a folder named like a file keeps it inside
    assert manifest_path(tmp_path / "odd.parquet") == tmp_path / "odd.parquet" / "manifest.json"


def test_a_broken_pairs_manifest_is_refused_by_push_not_skipped(tmp_path):
    from fixtures.push import make_prefs_dir

    from evoq_data.publish.push import run_push

    prefs = make_prefs_dir(tmp_path / "run")
    (tmp_path / "run" / "pairs.manifest.json").write_text("{broken")
    with pytest.raises(EvoqError, match=r"pairs manifest .*pairs\.manifest\.json is not "
                                        "readable JSON"):
        run_push(prefs, "me/x", "v1", local_dir=tmp_path / "out", quiet=True)


def test_the_model_card_renderer_is_strict():
    from evoq_data.core.cards import render_model_card

    with pytest.raises(Exception, match="is undefined"):  # jinja2's UndefinedError
        render_model_card({})


def test_atomic_parquet_writer_leaves_no_temp_file_on_failure(tmp_path):
    import pyarrow as pa

    from evoq_data.core.io import atomic_path, write_parquet_atomic

    out = write_parquet_atomic(pa.table({"x": [1]}), tmp_path / "a" / "t.parquet")
    assert out.is_file() and [p.name for p in out.parent.iterdir()] == ["t.parquet"]
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "b.parquet") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert list(tmp_path.glob("*b.parquet*")) == []


@pytest.mark.parametrize("name, ok", [
    ("me/data", True), ("me/da..ta", False), ("me/data.git", False), ("data", False),
    ("me/-x", False), ("me/x--y", False),
])
def test_repo_id_rule(name, ok):
    from evoq_data.core.names import check_repo_id, repo_id_problem

    assert (repo_id_problem(name) is None) == ok
    if not ok:
        with pytest.raises(EvoqError, match="malformed --repo-id"):
            check_repo_id(name, "--repo-id")
