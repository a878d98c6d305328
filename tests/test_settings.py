"""Settings declared once: evolve's options, ``--config`` keys, help and checks come from the
fields of ``EvolveSettings``; a settings file's values are checked against the fields' types;
recipes are found by one lookup."""

from __future__ import annotations

import dataclasses

import pytest
import typer
from fixtures.cli import assert_user_error
from typer.testing import CliRunner

from evoq_data.cli.fields import flag_of, keys_of
from evoq_data.core.errors import EvoqError
from evoq_train.cli import app
from evoq_train.evolve.config import EvolveSettings, option_name

runner = CliRunner()


def _evolve_params() -> dict:
    return {p.name: p for p in typer.main.get_command(app).commands["evolve"].params}


def test_every_field_is_an_option_with_its_help_and_a_config_key():
    params = _evolve_params()
    help_text = " ".join(runner.invoke(app, ["evolve", "--help"],
                                       env={"COLUMNS": "300"}).output.split())
    keys = keys_of(EvolveSettings)
    for f in dataclasses.fields(EvolveSettings):
        p = params[f.name]
        assert "/".join([p.opts[0], *p.secondary_opts]) == flag_of(f)
        assert p.opts[1:] == f.metadata.get("aliases", [])
        assert p.help == f.metadata["help"] and f.metadata["help"] in help_text
        assert keys[f.name] == f.name
        assert keys[flag_of(f).split("/")[0].lstrip("-").replace("-", "_")] == f.name
    assert set(params) == {f.name for f in dataclasses.fields(EvolveSettings)} | {"config"}
    # the spellings of today
    assert params["votes_per_pair"].opts == ["--votes-per-pair", "-k"]
    assert params["quiet"].opts == ["--quiet", "-q"] and params["quiet"].is_flag
    assert (option_name("evals"), option_name("engine_args"), option_name("eval_base")) == (
        "--eval", "--engine-arg", "--eval-base/--no-eval-base")
    assert "[default: 20000]" in help_text and "[default: qwen2.5-vl-7b-8xa100]" in help_text


@pytest.fixture
def captured(monkeypatch):
    """The settings evolve would run with (the run itself is tested in test_evolve.py)."""
    seen = []

    def run_evolve(settings, *, quiet=False):
        seen.append((settings, quiet))
        return {}

    monkeypatch.setattr("evoq_train.evolve.run.run_evolve", run_evolve)
    return seen


def test_config_file_then_command_line(tmp_path, captured):
    config = tmp_path / "evolve.yaml"
    config.write_text("pool: ./pool\nrounds: 3\nvotes-per-pair: 4\nseed: 5\n"
                      "engine_arg: {enforce_eager: true, limit_mm_per_prompt: {image: 2}}\n"
                      "eval: {small: labels.csv}\neval_base: 'off'\nquiet: true\n")
    res = runner.invoke(app, ["evolve", "--config", str(config), "--rounds", "2", "-k", "8",
                              "--engine-arg", "a=1", "--engine-arg", "b=2",
                              "--vote-arg=--no-reasoning"])
    assert res.exit_code == 0, res.output
    (s, quiet), = captured
    # the command line wins, also with a value equal to the default (--rounds 2)
    assert (s.pool, s.rounds, s.votes_per_pair, s.seed) == ("./pool", 2, 8, 5)
    assert s.engine_args == ["a=1", "b=2"] and s.vote_args == ["--no-reasoning"]
    assert s.evals == ["small=labels.csv"]
    assert (s.eval_base, s.quiet, quiet) == (False, True, True)
    assert s.train_config == "qwen2.5-vl-7b-8xa100" and s.max_tokens == 1024
    hub = {"pool": "me/pool", "model": "me/model"}  # --quiet does not change what a run makes
    assert EvolveSettings(**hub, quiet=True).identity() == EvolveSettings(**hub).identity()

    s = EvolveSettings.build(config, {})
    # a mapping's values are written as JSON, as --engine-arg values are read
    assert s.engine_args == ["enforce_eager=true", 'limit_mm_per_prompt={"image": 2}']
    assert s.rounds == 3 and s.quiet is True


@pytest.mark.parametrize(("line", "fragments"), [
    ("pool: 5", ["pool must be text", "got 5"]),
    ("local_dir: [a, b]", ["local_dir must be text", "got ['a', 'b']"]),
    ("repo_id: 5", ["repo_id must be text"]),
    ("run-dir: 7", ["run-dir must be text"]),
    ("engine_arg: 5", ["engine_arg must be a list", "got 5"]),
    ("eval_base: maybe", ["eval_base must be true or false", "'maybe'"]),
    ("rounds: 2.5", ["rounds must be an integer", "2.5"]),
    ("rounds: true", ["rounds must be an integer"]),
    ("seed: null", ["seed must be set"]),
    ("pairs: 3", ["unknown setting 'pairs'"]),
    ("engine: [vllm", ["is not valid YAML"]),
    ("- pool", ["must be a mapping of settings"]),
])
def test_a_bad_config_value_is_one_line_naming_the_key(tmp_path, line, fragments, captured):
    config = tmp_path / "evolve.yaml"
    config.write_text(line + "\n")
    res = runner.invoke(app, ["evolve", "--config", str(config), "--run-dir",
                              str(tmp_path / "run")])
    assert_user_error(res, f"--config {config}", *fragments)
    assert not captured and not (tmp_path / "run").exists()


@pytest.mark.parametrize(("text", "value"), [
    ("true", True), ("no", False), ("'off'", False), ("'Yes'", True), ("'0'", False)])
def test_booleans_take_true_false_and_their_spellings(tmp_path, text, value):
    config = tmp_path / "evolve.yaml"
    config.write_text(f"eval_base: {text}\n")
    assert EvolveSettings.build(config, {}).eval_base is value


def test_checks_come_from_the_fields():
    base = {"pool": ".", "model": ".", "run_dir": "run", "train_config": "cpu-smoke"}
    for name, value, message in [
            ("rounds", 0, "--rounds must be an integer of at least 1, got 0"),
            ("max_tokens", 0, "--max-tokens must be an integer of at least 1, got 0"),
            ("seed", -1, "--seed must be an integer of at least 0, got -1"),
            ("init_from", "last", "--init-from must be one of previous, base, got 'last'"),
            ("engine", "openai", "use it as --bootstrap-engine"),
            ("bootstrap_engine", "gpt", "--bootstrap-engine must be one of")]:
        with pytest.raises(EvoqError, match=message):
            EvolveSettings(**{**base, name: value}).validate()


def test_one_recipe_lookup():
    from evoq_train.evolve.config import accelerate_file
    from evoq_train.recipes import recipes_dir, resolve_recipe

    assert resolve_recipe("cpu-smoke") == recipes_dir() / "cpu-smoke.yaml"
    assert accelerate_file("accelerate/zero3") == recipes_dir() / "accelerate" / "zero3.yaml"
    # a launcher config is not a training recipe, nor the other way round
    with pytest.raises(EvoqError, match="no recipe 'accelerate/zero3'.*cpu-smoke"):
        resolve_recipe("accelerate/zero3")
    with pytest.raises(EvoqError, match="--accelerate-config: no accelerate config "
                                        "'cpu-smoke'.*accelerate/zero3"):
        accelerate_file("cpu-smoke")
    with pytest.raises(EvoqError, match="no recipe '../pyproject'"):
        resolve_recipe("../pyproject", files=False, scope="any")
    res = runner.invoke(app, ["recipe-path", "nope"])
    assert_user_error(res, "no recipe 'nope'", "accelerate/zero3", "cpu-smoke")
