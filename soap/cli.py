"""Command-line habits shared by every SOAP command: bad input is one line naming the flag and the value.

    parser = OneLineParser(prog="python -m search.optimize", description=...)
    parser.add_argument("--gpus", type=positive_int("--gpus"))
    ...  # a bad flag raises UsageError; the command prints "error: ..." and exits 2
"""

from __future__ import annotations

import argparse

from models.errors import SoapError

EXIT_BAD_INPUT, EXIT_INTERRUPTED = 2, 130


class UsageError(SoapError):
    """A command-line flag with a bad value."""


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + message
        raise UsageError(f"{message}; see {self.prog} --help")


def _positive(flag: str, parse: type, what: str):
    """An argparse type: `parse(text)` that must be > 0, else one line naming the flag and the value."""
    def check(text: str):
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be {what}, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{flag} must be {what}, got {value}")
        return value
    return check


def positive_int(flag: str):
    return _positive(flag, int, "a positive integer")


def positive_float(flag: str):
    return _positive(flag, float, "a number of seconds > 0")


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
