"""docs/: cli.md is what the commands' parsers print now (docs/gen_cli.py writes it); every `python -m`
command the README and docs show is a command; every link and picture they show exists."""

import importlib
import importlib.util
import re
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


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_python_m_command_in_the_docs_names_a_command():
    named = {(path.name, module) for path in DOCS
             for module in re.findall(r"(?:`|^ {4}|usage: )python -m\s+([\w.]+)", path.read_text(), re.M)
             if module == module.lower()}  # MODULE, benchmarks.NAME: placeholders
    assert len({module for _, module in named}) >= 15
    for where, module in sorted(named):
        target = "models.__main__" if module == "models" else module
        assert callable(getattr(importlib.import_module(target), "main", None)), f"{where}: python -m {module}"


def test_every_link_and_picture_in_the_docs_exists():
    for path in DOCS:
        for link in re.findall(r"\]\(([^)#]+)\)", path.read_text()):
            if "://" not in link:
                assert (path.parent / link).exists(), f"{path.name}: {link}"
