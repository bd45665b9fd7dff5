"""What a Kaggle run log says: its plain text, the exception the notebook raised, the end of its traceback."""
from __future__ import annotations

import contextlib
import json
import re
from typing import Any

from utils.report import ANSI_COLOUR

TRACEBACK_LINES = 60  # of a failed run's log, in its report


def _log_text(log: str) -> str:
    """Plain text of a Kaggle run log (a JSON list of {stream_name, time, data} records, or plain text)."""
    records: list[Any] = []
    with contextlib.suppress(ValueError):
        parsed = json.loads(log)
        records = parsed if isinstance(parsed, list) else []
    if not records:
        for line in log.splitlines():  # the log may also come one record per line, with list punctuation
            with contextlib.suppress(ValueError):
                records.append(json.loads(line.strip().lstrip("[,").rstrip(",]")))
    data = [r["data"] for r in records if isinstance(r, dict) and isinstance(r.get("data"), str)]
    return "".join(data) if data else log


def run_error(log: str) -> str | None:
    """The exception the notebook raised, e.g. 'DataError: no dataset attached ...', from a run log."""
    text = ANSI_COLOUR.sub("", _log_text(log))
    found = None
    for line in text.splitlines():
        match = re.match(r"\s*([A-Za-z_][\w.]*(?:Error|Exception|Interrupt)):\s*(\S.*)$", line)
        if match and not match.group(1).endswith(("PapermillExecutionError", "CellExecutionError")):
            found = f"{match.group(1).rsplit('.', 1)[-1]}: {match.group(2).strip()}"
    return found


def traceback_text(log: str, lines: int = TRACEBACK_LINES) -> str:
    """The end of a run log from its last traceback (or its last lines), without terminal colours."""
    text = ANSI_COLOUR.sub("", _log_text(log))
    rows = text.splitlines()
    starts = [i for i, row in enumerate(rows) if row.lstrip().startswith(("Traceback", "-----"))
              or "Exception encountered at" in row]
    return "\n".join(rows[starts[-1] if starts else 0:][-lines:])

