"""One JSON object per log line, through the stdlib logging module.

Extra fields passed as `logger.info("msg", extra={"pod": "ns/name"})` become keys of the
object. Expected errors are logged as one line with `error`; a traceback (an `exc_info`)
is folded into the `exc` key, so nothing multi-line ever reaches stderr.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO, Any

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


class JsonFormatter(logging.Formatter):
    """Formats a record as `{"ts": ..., "level": ..., "logger": ..., "msg": ..., **extra}`."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _utc_timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update(extra_fields(record))
        if record.exc_info and record.exc_info[1] is not None:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=True)


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in vars(record).items()
            if key not in _RECORD_ATTRS and not key.startswith("_")}


class CliFormatter(logging.Formatter):
    """`opaudit: warning: MESSAGE (pod=ns/name, container=app)`: one line, for a person."""

    def format(self, record: logging.LogRecord) -> str:
        fields = ", ".join(f"{key}={value}" for key, value in extra_fields(record).items())
        text = " ".join(f"{record.getMessage()}{f' ({fields})' if fields else ''}".split())
        return f"opaudit: {record.levelname.lower()}: {text}"


def _utc_timestamp(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


def setup_json_logging(level: int | str = logging.INFO, stream: IO[str] | None = None) -> None:
    """Route every logger (ours, urllib3's, kubernetes') to one JSON-lines handler."""
    _route_logging(JsonFormatter(), level, stream)


def setup_cli_logging(level: int | str = logging.WARNING, stream: IO[str] | None = None) -> None:
    """`diagnose`: warnings as one readable line each on stderr, with their fields."""
    _route_logging(CliFormatter(), level, stream)


def _route_logging(formatter: logging.Formatter, level: int | str,
                   stream: IO[str] | None) -> None:
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # urllib3 logs every retry as a WARNING with the full URL; our own lines say what matters.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    logging.captureWarnings(True)
