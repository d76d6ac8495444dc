"""Command-line habits shared by every SOAP command: one error path, one line per bad input.

    def main(argv: list[str] | None = None) -> int:
        return run_command(_main, argv)        # SoapError: "error: ..." exit 2; Ctrl-C: exit 130

    def _main(argv) -> int:
        parser = OneLineParser(prog="python -m search.optimize", description=...)
        parser.add_argument("--gpus", type=positive_int("--gpus"))
        ...

A bad flag raises UsageError, a bad file or value the library's own SoapError; `run_command` prints
its one line and returns 2, never a traceback. Ctrl-C anywhere returns 130: the `finally` blocks on the
way out have stopped any worker processes (soap.devices) and files are written atomically
(`write_atomic`), so nothing is left half-done. This module lives in models/, the lowest layer, so that
every command (models' own included) shares it.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
from collections.abc import Callable

from models.errors import SoapError

EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED = 2, 1, 130


class UsageError(SoapError):
    """A command-line flag with a bad value, or a file named by a flag that cannot be read or written."""


class CommandFailed(SoapError):
    """A command that could not do its work although its input was good (e.g. no strategy could run)."""


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + message
        raise UsageError(f"{message}; see {self.prog} --help")


def run_command(body: Callable[[list[str] | None], int], argv: list[str] | None) -> int:
    """`body(argv)`'s exit code; a SoapError is its one line and 2 (CommandFailed: 1), Ctrl-C is 130, a closed
    pipe on the output 0."""
    try:
        return body(argv)
    except CommandFailed as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return EXIT_FAILED
    except SoapError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (`... | head`): what it wanted was printed
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 0


def int_at_least(flag: str, minimum: int):
    """An argparse type: an integer >= minimum, else one line naming the flag and the value."""
    what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"

    def check(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{flag} must be {what}, got {value}")
        return value
    return check


def positive_int(flag: str):
    return int_at_least(flag, 1)


def natural_int(flag: str):
    """An integer >= 0: a seed, a count that may be zero."""
    return int_at_least(flag, 0)


def positive_float(flag: str, what: str = "a number of seconds > 0"):
    """An argparse type: a finite number > 0, else one line naming the flag and the value."""
    def check(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be {what}, got {text!r}") from None
        if not 0 < value < float("inf"):  # also refuses nan
            raise argparse.ArgumentTypeError(f"{flag} must be {what}, got {value}")
        return value
    return check


def percent(flag: str):
    """An argparse type: a percentage in [0, 100), returned as a fraction."""
    def check(text: str) -> float:
        try:
            value = float(text.rstrip("%"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be a percentage from 0 to below 100, got {text!r}") from None
        if not 0 <= value < 100:
            raise argparse.ArgumentTypeError(f"{flag} must be a percentage from 0 to below 100, got {value:g}")
        return value / 100
    return check


def read_text(flag: str, path: str, what: str) -> str:
    """The text of the file a flag names; UsageError (one line) if it cannot be read or is not text."""
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except OSError as error:
        raise UsageError(f"{flag} {path!r} cannot be read ({error.strerror}); pass {what}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{flag} {path!r} is not a text file (not UTF-8); pass {what}") from None


def check_writable(flag: str, path: str) -> None:
    """UsageError now, before any work, if the file a flag names could not be written later."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UsageError(f"{flag} {path!r} is a folder; pass a file path")
    if not os.path.isdir(folder):
        raise UsageError(f"{flag} {path!r}: folder {folder!r} does not exist; create it or pass another path")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"{flag} {path!r}: folder {folder!r} is not writable; pass a writable path")


def write_atomic(path: str, data: str | bytes) -> None:
    """Write a whole file or nothing: a Ctrl-C or a full disk never leaves a partial file behind."""
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".partial")
    try:
        with os.fdopen(handle, "wb" if isinstance(data, bytes) else "w") as file:
            file.write(data)
        os.chmod(temporary, 0o666 & ~_umask())  # as open() would create it: mkstemp's files are private
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_figure(path: str, figure) -> None:
    """A matplotlib figure saved atomically, in the format its file extension names (png, pdf, svg)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format=os.path.splitext(path)[1][1:] or "png", dpi=100)
    write_atomic(path, buffer.getvalue())
