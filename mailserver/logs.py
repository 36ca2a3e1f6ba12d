"""Logging: twisted.logger observers writing human text or JSON lines.

``make_observer`` builds the observer (tests use it on a StringIO);
``start_logging`` installs it once for the process, and routes the standard
``logging`` module (used by cassandra-driver, minio, ...) into it, so every
line has the same format and level filter.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import IO, Any

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    PredicateResult,
    formatEvent,
    globalLogBeginner,
)
from zope.interface import implementer

__all__ = ["make_observer", "start_logging", "LEVELS"]

LEVELS: dict[str, LogLevel] = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "error": LogLevel.error,
    "critical": LogLevel.critical,
}

#: event keys that are twisted.logger bookkeeping, not user fields
_INTERNAL = {
    "log_format",
    "log_level",
    "log_namespace",
    "log_source",
    "log_logger",
    "log_time",
    "log_failure",
    "log_system",
    "log_io",
    "log_text",
    "log_trace",
    "log_flattened",
    "log_legacy",
    "log_observer",
    "message",
    "format",
    "isError",
    "system",
    "time",
    "failure",
    "why",
}


def _timestamp(event: dict[str, Any]) -> str:
    t = event.get("log_time")
    if t is None:
        t = datetime.now(UTC).timestamp()
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _level_name(event: dict[str, Any]) -> str:
    level = event.get("log_level")
    return getattr(level, "name", None) or "info"


def _message(event: dict[str, Any]) -> str:
    text = formatEvent(event)
    if not text and event.get("message"):  # legacy log.msg()
        text = " ".join(str(m) for m in event["message"])
    return text


@implementer(ILogObserver)
class TextObserver:
    """``2026-12-04T21:00:00.000Z info [mailserver.service] message``."""

    def __init__(self, stream: IO[str]):
        self._stream = stream

    def __call__(self, event: dict[str, Any]) -> None:
        ns = event.get("log_namespace", "-")
        line = f"{_timestamp(event)} {_level_name(event)} [{ns}] {_message(event)}"
        failure = event.get("log_failure")
        if failure is not None:
            line += "\n" + failure.getTraceback().rstrip()
        self._stream.write(line + "\n")
        self._stream.flush()


@implementer(ILogObserver)
class JSONLinesObserver:
    """One JSON object per line: time, level, namespace, msg, the event's
    own simple fields, and ``traceback`` for failures."""

    def __init__(self, stream: IO[str]):
        self._stream = stream

    def __call__(self, event: dict[str, Any]) -> None:
        record: dict[str, Any] = {
            "time": _timestamp(event),
            "level": _level_name(event),
            "namespace": event.get("log_namespace", "-"),
            "msg": _message(event),
        }
        for key, value in event.items():
            if key in _INTERNAL or key.startswith("log_") or key in record:
                continue
            if isinstance(value, str | int | float | bool) or value is None:
                record[key] = value
        failure = event.get("log_failure")
        if failure is not None:
            record["traceback"] = failure.getTraceback()
        self._stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._stream.flush()


def make_observer(fmt: str = "text", level: str = "info", stream: IO[str] | None = None) -> Any:
    """An observer in format ``text`` or ``json`` that drops events below
    ``level``."""
    stream = stream if stream is not None else sys.stderr
    if fmt == "json":
        base: Any = JSONLinesObserver(stream)
    elif fmt == "text":
        base = TextObserver(stream)
    else:
        raise ValueError(f"unknown log format {fmt!r}")
    predicates: list[Any] = [LogLevelFilterPredicate(defaultLogLevel=LEVELS[level])]
    if level != "debug":
        predicates.append(_drop_twisted_chatter)
    return FilteringLogObserver(base, predicates)


#: Twisted's per-port and per-factory info messages ("Starting factory ...",
#: "SmtpFactory starting on 2525", "(TCP Port 2525 Closed)"): shown only at
#: log_level debug, since every listener logs its address itself.
_CHATTER_FORMATS = {"Starting factory {factory!r}", "Stopping factory {factory!r}"}
_CHATTER_TEXT = re.compile(r"^(?:.+ starting on \d+|\(\S+ Port \d+ Closed\))$")


def _drop_twisted_chatter(event: dict[str, Any]) -> PredicateResult:
    if event.get("log_level") not in (LogLevel.info, LogLevel.debug):
        return PredicateResult.maybe
    if event.get("log_format") in _CHATTER_FORMATS:
        return PredicateResult.no
    message = event.get("message")
    if message and len(message) == 1 and _CHATTER_TEXT.match(str(message[0])):
        return PredicateResult.no
    return PredicateResult.maybe


class _ToTwisted(logging.Handler):
    """Forwards stdlib ``logging`` records into twisted.logger."""

    _map = {
        logging.DEBUG: LogLevel.debug,
        logging.INFO: LogLevel.info,
        logging.WARNING: LogLevel.warn,
        logging.ERROR: LogLevel.error,
        logging.CRITICAL: LogLevel.critical,
    }

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = self._map.get(record.levelno, LogLevel.info)
            Logger(namespace=record.name).emit(level, "{text}", text=record.getMessage())
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


_started = False


def start_logging(fmt: str = "text", level: str = "info", stream: IO[str] | None = None) -> None:
    """Install the process-wide observer (once; later calls do nothing)."""
    global _started
    if _started:
        return
    _started = True
    globalLogBeginner.beginLoggingTo(
        [make_observer(fmt, level, stream)], redirectStandardIO=False, discardBuffer=True
    )
    root = logging.getLogger()
    root.addHandler(_ToTwisted())
    root.setLevel(
        {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING}.get(
            level, logging.ERROR
        )
    )
