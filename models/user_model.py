"""A user's model named on the command line as `path/to/file.py:NAME`, built with `nnx.Rngs(0)`.

    module = load_user_model("path/to/file.py:NAME")       # then models.importer.import_model(module, ...)

NAME is an nnx.Module subclass whose constructor takes `rngs` as a keyword (and nothing else it requires),
or a function taking `rngs` that returns an nnx.Module. The file runs as a module of its own (its
directory is not added to sys.path). Every failure is one ModelImportError line: the file does not exist,
does not import (the exception's first line, with the file's line where it was raised), has no NAME,
NAME is not a module, or building it fails.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import os
import sys
import traceback
from types import ModuleType

from flax import nnx

from models.errors import ModelImportError

SPEC_FORM = "path/to/file.py:NAME"


def load_user_model(spec: str) -> nnx.Module:
    """Build the module that `spec` ("path/to/file.py:NAME") names, with `rngs=nnx.Rngs(0)`."""
    path, name = _parse(spec)
    loaded = _load_file(path)
    factory = getattr(loaded, name, None)
    if factory is None:
        raise ModelImportError(f"{path} has no {name!r}; the nnx.Module classes it defines: "
                               f"{', '.join(_module_names(loaded)) or 'none'}")
    if not _is_module_class(factory) and not inspect.isfunction(factory):
        raise ModelImportError(f"{name!r} in {path} is not an nnx.Module subclass or a function returning one "
                               f"(its type: {type(factory).__name__})")
    module = _build(factory, name, path)
    if not isinstance(module, nnx.Module):
        raise ModelImportError(f"{name}(rngs=nnx.Rngs(0)) in {path} returned an object of type "
                               f"{type(module).__name__}, not an nnx.Module")
    return module


def _parse(spec: str) -> tuple[str, str]:
    path, colon, name = spec.rpartition(":")
    if not colon or not path or not name.isidentifier():
        raise ModelImportError(f"model {spec!r} is not of the form {SPEC_FORM}")
    if not os.path.isfile(path):
        raise ModelImportError(f"model file {path!r} does not exist; pass {SPEC_FORM}")
    return path, name


def _load_file(path: str) -> ModuleType:
    """Run the file as a module of its own, named after its path (no other module has that name)."""
    absolute = os.path.abspath(path)
    module_name = f"soap_user_model_{hashlib.sha256(absolute.encode()).hexdigest()[:16]}"
    spec = importlib.util.spec_from_file_location(module_name, absolute)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[module_name]
        raise ModelImportError(f"model file {path!r} does not import ({_raised_at(error, absolute)}"
                               f"{summary(error)}); fix the file") from None
    return module


def _build(factory, name: str, path: str):
    try:
        return factory(rngs=nnx.Rngs(0))
    except Exception as error:
        raise ModelImportError(f"{name}(rngs=nnx.Rngs(0)) from {path} failed ({summary(error)}); NAME must take "
                               f"rngs as a keyword and need no other argument") from None


def _is_module_class(value) -> bool:
    return inspect.isclass(value) and issubclass(value, nnx.Module)


def _module_names(module: ModuleType) -> list[str]:
    return sorted(name for name, value in vars(module).items()
                  if _is_module_class(value) and value.__module__ == module.__name__)


def _raised_at(error: Exception, absolute: str) -> str:
    """"line N: " of the file's innermost frame in the error's traceback (a SyntaxError's own line)."""
    if isinstance(error, SyntaxError) and error.lineno is not None:
        return f"line {error.lineno}: "
    lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__) if frame.filename == absolute]
    return f"line {lines[-1]}: " if lines else ""


def summary(error: BaseException) -> str:
    """The exception's one-line summary: its type and the first line of its message."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0].rstrip('.')}" if lines else type(error).__name__
