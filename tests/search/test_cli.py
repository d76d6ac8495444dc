"""The `soap` console script: the entry point pyproject.toml installs, its help, and each command as its
`python -m` form."""

import importlib
import tomllib
from pathlib import Path

import pytest

from search import cli

ROOT = Path(__file__).resolve().parents[2]


def entry_point():
    """The function `soap` runs, as pyproject.toml's [project.scripts] names it."""
    target = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["soap"]
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)


def test_soap_help_lists_every_command_with_its_module(capsys):
    assert entry_point()(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: soap COMMAND")
    for name, command in cli.COMMANDS.items():
        assert f"  {name}  " in out and f"(python -m {command.module})" in out


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_soap_command_help_is_its_modules_help(command, capsys):
    with pytest.raises(SystemExit) as exit:
        entry_point()([command, "--help"])
    assert exit.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: python -m {cli.COMMANDS[command].module} ")


def test_soap_models_prints_what_python_m_models_prints(capsys):
    assert entry_point()(["models", "alexnet"]) == 0
    via_soap = capsys.readouterr().out
    assert importlib.import_module("models.__main__").main(["alexnet"]) == 0
    assert via_soap == capsys.readouterr().out
    assert "conv1" in via_soap


@pytest.mark.parametrize("argv, message", [
    pytest.param([], "error: no command given; commands: optimize, models", id="none"),
    pytest.param(["optimise"], "error: unknown command 'optimise'; commands: optimize, models", id="unknown"),
])
def test_a_missing_or_unknown_command_is_one_line(argv, message, capsys):
    assert entry_point()(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


def test_a_bad_flag_is_the_commands_own_one_line(capsys):
    assert entry_point()(["optimize", "--model", "alexnet", "--gpus", "0"]) == 2
    assert capsys.readouterr().err == ("error: argument --gpus: --gpus must be a positive integer, got 0; "
                                       "see python -m search.optimize --help\n")
