"""SOAP's versioned JSON files (strategies, machines, profiles): the shared first checks on reading one."""

from __future__ import annotations

import json

from models.errors import SoapError


def read_document(text: str, kind: str, version: int, source: str, error: type[SoapError], fix: str) -> dict:
    """The JSON object of a `{"format": "soap-<kind>", "version": ...}` file; `error` if it is not one.

    `fix` ends the message when the text is not JSON at all (e.g. "delete it and calibrate again").
    """
    try:
        document = json.loads(text)
    except json.JSONDecodeError as decode_error:
        raise error(f"{source} is not valid JSON ({decode_error}); {fix}") from None
    if not isinstance(document, dict) or document.get("format") != f"soap-{kind}":
        raise error(f"{source} is not a SOAP {kind} (needs \"format\": \"soap-{kind}\")")
    if document.get("version") != version:
        raise error(f"{source} has version {document.get('version')!r}; this SOAP reads version {version}")
    return document
