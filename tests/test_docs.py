"""README.md and docs/: cli.md is what the commands' parsers print now (docs/gen_cli.py writes it); every
`python -m` command they show is a command, and the cheap ones run; every link and picture they show exists."""

import importlib
import importlib.util
import re
from pathlib import Path

import pytest

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


def cheap_commands() -> list[str]:
    """The search.optimize and models commands the docs show that run in seconds: simulated machines
    without descents, and zoo graphs; placeholders (NAME, FILE) and [optional] flags left out."""
    found = set()
    for path in DOCS:
        text = path.read_text()
        spans = re.findall(r"`(python -m (?:search\.optimize|models) [^`]+)`", text)
        spans += re.findall(r"^ {4}(python -m (?:search\.optimize|models) .+?)(?:\s+#.*)?$", text, re.M)
        for span in spans:
            command = " ".join(re.sub(r"\[[^\]]*\]", "", span).split())
            if re.search(r"\b[A-Z]{2,}\b|\.py", command) or "--descent" in command:
                continue
            if "search.optimize" in command and "--machine" not in command:
                continue  # the local machine: calibration and measured runs, minutes
            found.add(command)
    return sorted(found)


@pytest.mark.parametrize("command", cheap_commands())
def test_the_cheap_commands_the_docs_show_run(command, tmp_path, capsys):
    module, *argv = command.split()[2:]
    if module == "search.optimize":
        argv += ["--out", str(tmp_path)]
    target = "models.__main__" if module == "models" else module
    assert importlib.import_module(target).main(argv) == 0, capsys.readouterr().err
