"""The project's shape: the generating commands take their options from one declaration,
the project stands alone, SQL lives only in sql/, and every manifest has a schema_version."""

from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path

import pytest
import typer

from evoq_data.cli import app
from evoq_data.cli.fields import flag_of
from evoq_data.cli.options import GenerationOptions

ROOT = Path(__file__).resolve().parent.parent
GENERATING = ("vote", "score", "compare", "demo")


def _command(command: str):
    return typer.main.get_command(app).commands[command]


@pytest.mark.parametrize("command", GENERATING)
def test_generating_commands_take_the_generation_options_from_their_one_declaration(
        command):
    """Each option of GenerationOptions, with its help and default, is an option of the
    command and shows in its --help."""
    from typer.testing import CliRunner

    fields = dataclasses.fields(GenerationOptions)
    params = {p.name: p for p in _command(command).params}
    help_text = " ".join(CliRunner().invoke(app, [command, "--help"],
                                            env={"COLUMNS": "300"}).output.split())
    for f in fields:
        p = params[f.name]
        assert "/".join(p.opts + p.secondary_opts) == flag_of(f)
        assert p.help == f.metadata["help"]
        expected = (f.default if f.default is not dataclasses.MISSING else None)
        if (command, f.name) == ("demo", "engine"):
            expected = "piqe"  # the demo runs on CPU with the classical judge by default
        assert p.default == expected, (f.name, p.default)
        assert flag_of(f).split("/")[0] in help_text and f.metadata["help"] in help_text


def test_no_command_declares_a_generation_option_itself():
    """The options come from GenerationOptions only: no Typer option of the project is
    declared with one of their names (evolve takes its --max-tokens and --engine-arg from the
    same fields through generation_field)."""
    flags = "|".join(re.escape(flag_of(f).split("/")[0])
                     for f in dataclasses.fields(GenerationOptions))
    declared = re.compile(rf"""Option\(\s*["']({flags})["'/]""")
    offenders = [f"{path.relative_to(ROOT)}:{i}"
                 for package in ("evoq_data", "evoq_train")
                 for path in (ROOT / package).rglob("*.py")
                 for i, line in enumerate(path.read_text().splitlines(), 1)
                 if declared.search(line)]
    assert not offenders, offenders


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
