"""Errors of the simulator's inputs: machine files and cost profiles."""

from models.errors import SoapError


class MachineError(SoapError):
    """A machine description (preset name or JSON file) that is unknown or invalid."""


class ProfileError(SoapError):
    """A cost profile that is malformed, of another device kind or JAX version, or missing an entry."""


class OutOfMemoryError(SoapError):
    """A strategy whose peak memory exceeds a device's memory."""
