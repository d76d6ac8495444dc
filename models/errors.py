"""The root of SOAP's user-facing errors.

Every error a user can cause (a bad flag, a bad file, a strategy that does not fit) derives from
`SoapError`; its message is ONE line that says the rule, the bad value and how to fix it. The command
line prints that line and exits 2, never a traceback. `assert` is kept for internal invariants.
"""


class SoapError(ValueError):
    """A user-facing error whose message is one line: rule, bad value, fix."""


class UnknownModelError(SoapError):
    """A model or dataset name that SOAP does not know."""


class ShapeError(SoapError):
    """An operator whose shapes do not fit together (shape inference failed)."""


class PlacementError(SoapError):
    """Shardings that a training step cannot run (device orders, device grids, devices of other processes)."""


class DataError(SoapError):
    """A data folder SOAP cannot read (missing, empty, wrong layout, no readable image) or a bad batch request."""


class ModelImportError(SoapError):
    """A user's model that SOAP cannot load or import (missing file, import failure, unsupported layer)."""
