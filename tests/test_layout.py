"""The project's shape: the generating commands share their options, the project stands
alone, SQL lives only in sql/, and every manifest has a schema_version."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import click
import pytest
import typer

from evoq_data.cli import app
from evoq_data.cli.options import GENERATION_OPTIONS

ROOT = Path(__file__).resolve().parent.parent
GENERATING = ("vote", "score", "compare", "demo")


def _options(command: str) -> dict[str, click.Parameter]:
    group = typer.main.get_command(app)
    cmd = group.commands[command]
    return {opt.lstrip("-"): p for p in cmd.params for opt in p.opts if opt.startswith("--")}


def test_generating_commands_take_the_same_generation_options():
    seen = {}
    for command in GENERATING:
        opts = _options(command)
        missing = [name for name in GENERATION_OPTIONS if name not in opts]
        assert not missing, f"{command} lacks {missing}"
        seen[command] = {name: (opts[name].param_type_name, opts[name].multiple,
                                opts[name].is_flag, tuple(opts[name].opts))
                         for name in GENERATION_OPTIONS}
    assert all(v == seen["vote"] for v in seen.values()), seen


@pytest.mark.parametrize("command", GENERATING)
def test_a_model_for_piqe_is_refused_by_every_generating_command(command, tmp_path):
    from fixtures.cli import assert_user_error
    from typer.testing import CliRunner

    args = {"vote": ["vote", "--pairs", str(tmp_path / "p.parquet"), "--out", str(tmp_path / "v")],
            "score": ["score", "--images", str(tmp_path)],
            "compare": ["compare", str(tmp_path / "a.png"), str(tmp_path / "b.png")],
            "demo": ["demo", "--out", str(tmp_path / "d")]}[command]
    res = CliRunner().invoke(app, [*args, "--engine", "piqe", "--model", "some/model"])
    assert_user_error(res, "engine 'piqe' takes no --model")
    res = CliRunner().invoke(app, [*args, "--engine", "piqe", "--engine-arg", "bogus=1"])
    assert_user_error(res, "engine 'piqe' has no setting bogus")
    assert not (tmp_path / "v").exists() and not (tmp_path / "d").exists()


def _tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.split()
    return [ROOT / f for f in out if (ROOT / f).is_file()]


def test_no_file_refers_outside_the_repository():
    notes = "shared"  # the development notes' folder, beside the checkout
    pattern = re.compile(rf"\.\./{notes}/|env-{'notes'}\b")
    offenders = []
    for path in _tracked_files():
        if path.suffix in (".png", ".parquet", ".jpg") or path == Path(__file__):
            continue
        text = path.read_text(errors="ignore")
        offenders += [f"{path.relative_to(ROOT)}:{i}" for i, line in enumerate(text.splitlines(), 1)
                      if pattern.search(line)]
    assert not offenders, offenders


def test_sql_lives_only_in_sql_folder():
    """No SQL statement is written inline in Python (a DuckDB call takes a sql/ file)."""
    # an SQL statement opening a string literal (composition of sql/ files, "WITH {ctes}", is
    # the templating helper's job and allowed)
    statement = re.compile(r"""["']\s*(SELECT|CREATE|COPY|INSERT|WITH|SET|DELETE|UPDATE)\s+[A-Za-z_(*]""")
    offenders = []
    for path in (ROOT / "evoq_data").rglob("*.py"):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if statement.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not offenders, offenders


def test_every_manifest_writer_goes_through_the_one_helper():
    """Manifests are written by evoq_data.core.manifests (schema_version, atomic)."""
    offenders = []
    for path in (ROOT / "evoq_data").rglob("*.py"):
        text = path.read_text()
        for i, line in enumerate(text.splitlines(), 1):
            if re.search(r"write_text\(json\.dumps|json\.dump\(", line):
                offenders.append(f"{path.relative_to(ROOT)}:{i}")
    assert not offenders, offenders
