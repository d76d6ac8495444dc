"""A simulated timeline, and its export to Chrome/Perfetto trace JSON (open in ui.perfetto.dev).

One row (thread) per device and per link; times in the JSON are microseconds, as the format wants.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class TraceEvent:
    name: str
    kind: str
    resource: str
    start_ms: float
    end_ms: float


@dataclass(frozen=True)
class Trace:
    events: tuple[TraceEvent, ...]
    makespan_ms: float

    def to_chrome_json(self) -> str:
        rows = sorted({e.resource for e in self.events}, key=_row_order)
        tid = {row: i for i, row in enumerate(rows)}
        records = [{"ph": "M", "name": "thread_name", "pid": 0, "tid": tid[row], "args": {"name": row}}
                   for row in rows]
        records += [
            {"ph": "X", "name": e.name, "cat": e.kind, "pid": 0, "tid": tid[e.resource],
             "ts": e.start_ms * 1e3, "dur": (e.end_ms - e.start_ms) * 1e3}
            for e in self.events
        ]
        return json.dumps({"traceEvents": records, "displayTimeUnit": "ms"})


def _row_order(row: str) -> tuple:
    kind, _, rest = row.partition(" ")
    numbers = tuple(int(part) for part in rest.split("->"))
    return (kind != "device", numbers)
