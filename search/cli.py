"""The `soap` command: SOAP's commands under one name, each exactly its `python -m` form.

    soap optimize --model alexnet --gpus 2        # = python -m search.optimize --model alexnet --gpus 2
    soap models resnet50 --dataset imagenet       # = python -m models resnet50 --dataset imagenet
    soap calibrate --model alexnet --gpus 2       # = python -m simulator.calibrate --model alexnet --gpus 2
    soap cluster FOLDER --model alexnet --workers 2 --coordinator host0:8476 --strategy owt
    soap worker FOLDER 0                          # = python -m soap.worker FOLDER 0

`soap COMMAND ARGS` imports the command's module only then (so `soap --help` answers at once) and calls
its own `main(ARGS)`: the flags, the help, the one-line errors and the exit codes are the module's, so
the two forms cannot drift apart. The benchmarks stay `python -m benchmarks.NAME`: they sit above
search in the layering (models <- soap <- simulator <- search <- benchmarks). Installed by
`pip install -e .` as a console script (pyproject.toml, [project.scripts]).
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass

from models.cli import EXIT_BAD_INPUT, run_command


@dataclass(frozen=True)
class Command:
    module: str  # what `python -m` runs
    summary: str

    def main(self, argv: list[str]) -> int:
        if self.module == "soap.worker":  # a worker's main takes (folder, process id); worker_main parses them
            from soap.join import worker_main

            return worker_main(f"python -m {self.module}", importlib.import_module(self.module).main, argv)
        # `python -m models` runs models/__main__.py; the other commands are modules with a main of their own.
        module = "models.__main__" if self.module == "models" else self.module
        return importlib.import_module(module).main(argv)


COMMANDS = {
    "optimize": Command("search.optimize", "search the fastest way to split a model over N devices, run it "
                                           "beside the usual strategies, print the table"),
    "models": Command("models", "print a model's operator graph: every op's shapes, FLOPs and parameters"),
    "calibrate": Command("simulator.calibrate", "time every op and the links on the devices at hand "
                                                "(cached; optimize does this itself)"),
    "cluster": Command("soap.cluster", "write a job folder for workers started by hand, one per host"),
    "worker": Command("soap.worker", "one worker of such a job: soap worker FOLDER PROCESS_ID"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: soap COMMAND [ARGS ...]", "",
             "SOAP finds how to split every op of a model over N devices (FlexFlow's Sample, Operator, Attribute",
             "and Parameter space), prices each candidate with a simulator and runs the best in JAX.", "",
             "commands (each the same as its python -m form; `soap COMMAND --help` explains its flags):"]
    lines += [f"  {name:<{width}}  {command.summary}\n  {'':<{width}}  (python -m {command.module})"
              for name, command in COMMANDS.items()]
    lines += ["", "benchmarks: python -m benchmarks.NAME --help (docs/cli.md lists them all)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        return run_command(lambda _: print(usage()) or 0, [])
    if not argv or argv[0] not in COMMANDS:
        given = f"unknown command {argv[0]!r}" if argv else "no command given"
        print(f"error: {given}; commands: {', '.join(COMMANDS)}; see soap --help", file=sys.stderr)
        return EXIT_BAD_INPUT
    return COMMANDS[argv[0]].main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
