"""The station's log: human lines (the default) or one JSON object per line (``--log-format json``).

JSON records come from python-json-logger: ``time`` (UTC, ISO 8601), ``level``, ``logger``,
``event``, ``line`` (the full line id, where the record is about one), ``message`` and any other
fields the caller gave with ``extra=`` (``alarm_level``...). ``event`` is the name the caller gave,
or else derived from the record's format string (``"path %s of line %s closed: %s"`` becomes
``path_of_line_closed``), so it is stable and carries no data.

No message body is ever logged, in either format: the station logs what happened to an envelope
(kind, seq, line), never its content. Text that did come from the peer (a reason in an ERROR frame,
a station name) is data: every string field goes through ``display.shown`` first, so control
characters, ANSI escapes and bidirectional overrides appear as visible escapes (``\\u202e``), and
JSON's own escaping keeps each record on one line. Non-ASCII letters stay readable (Cyrillic is
written as Cyrillic).
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from redline.display import shown

FORMATS = ("human", "json")
_PLACEHOLDER = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[hlL]?[diouxXeEfFgGcrsa%]")
_WORD = re.compile(r"[a-z0-9]+")
# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class SafeFormatter(logging.Formatter):
    """A log message is one line and carries no control characters, whatever the peer sent (our
    own tracebacks, appended after the message, keep their lines)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return shown(super().formatMessage(record), newlines=False)


def event_name(template: object) -> str:
    """A stable name for a log call: the words of its format string, placeholders left out."""
    text = _PLACEHOLDER.sub(" ", str(template)).lower().split(":")[0]
    return "_".join(_WORD.findall(text)[:6]) or "log"


class StationJsonFormatter(JsonFormatter):
    """One JSON object per record; every string is data (``shown``), never markup or controls."""

    def __init__(self) -> None:
        super().__init__(json_ensure_ascii=False, timestamp=False)

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        log_data["time"] = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        log_data["level"] = record.levelname.lower()
        log_data["logger"] = record.name
        log_data["event"] = str(getattr(record, "event", "") or event_name(record.msg))
        line = getattr(record, "line", None)
        if line is not None:
            log_data["line"] = line
        log_data["message"] = record.getMessage()
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in log_data:
                log_data[key] = value
        log_data.update(message_dict)  # exc_info, stack_info: formatted by JsonFormatter.format
        for key, value in list(log_data.items()):
            if isinstance(value, str):  # a traceback keeps its lines (JSON escapes them), nothing else
                log_data[key] = shown(value, newlines=key in ("exc_info", "stack_info"))


def configure(log_format: str, *, verbose: bool) -> None:
    """Set up the root logger for ``redline serve``. JSON mode also logs every alarm (info ones
    too), because there the alarms are not printed on the terminal as well."""
    if log_format not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(StationJsonFormatter())
    else:
        handler.setFormatter(SafeFormatter("%(asctime)s %(message)s"))  # peer text in a log line stays data
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler], force=True)
    if log_format == "json":
        logging.getLogger("redline.station").setLevel(logging.INFO)
