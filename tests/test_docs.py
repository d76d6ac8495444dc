"""docs/: cli.md is what the commands' parsers print now (docs/gen_cli.py writes it)."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_generator():
    spec = importlib.util.spec_from_file_location("gen_cli", ROOT / "docs" / "gen_cli.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_md_is_what_the_parsers_print():
    generator = load_generator()
    assert (ROOT / "docs" / "cli.md").read_text() == generator.render(), (
        "docs/cli.md is stale: run python docs/gen_cli.py")


def test_check_says_stale_in_one_line(tmp_path, monkeypatch, capsys):
    generator = load_generator()
    monkeypatch.setattr(generator, "CLI_MD", tmp_path / "cli.md")
    monkeypatch.setattr(generator, "ROOT", tmp_path)
    (tmp_path / "cli.md").write_text("old\n")
    assert generator.main(["--check"]) == 1
    assert capsys.readouterr().err == "error: cli.md is stale; run python docs/gen_cli.py\n"
    assert generator.main([]) == 0 and generator.main(["--check"]) == 0
