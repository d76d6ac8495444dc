"""Errors of the SOAP space: a config or strategy that does not fit its op, graph or devices."""

from models.errors import SoapError


class InvalidConfigError(SoapError):
    """A parallel config that an op cannot take (degrees, devices)."""


class StrategyFileError(SoapError):
    """A strategy file that is malformed or made for another model, graph or device count."""


class BatchNotDivisibleError(InvalidConfigError):
    """A baseline that splits the batch over every device, for a batch the device count does not divide."""
