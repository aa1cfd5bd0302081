"""Structured logs: one JSON object per line (``DRIFTLINE_LOG_FORMAT=json``, the default)."""

from __future__ import annotations

import logging
import logging.config
import sys
import threading
from datetime import UTC, datetime
from typing import Any

import orjson

LEVELS = {"crit": "CRITICAL", "error": "ERROR", "warn": "WARNING", "info": "INFO", "debug": "DEBUG"}


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", "pid"[, "exception"]}`` per record.

    >>> record = logging.LogRecord("driftline", logging.INFO, "f.py", 1, "n=%d", (3,), None)
    >>> line = orjson.loads(JsonFormatter().format(record))
    >>> line["level"], line["logger"], line["message"]
    ('info', 'driftline', 'n=3')
    """

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(body).decode()


class RedactSasl(logging.Filter):
    """Hides the SASL exchange in the Kafka clients' debug lines: aiokafka logs every
    request it sends, and a SASL/PLAIN request holds the password.

    >>> class SaslAuthenticateRequest_v1:
    ...     def __repr__(self) -> str:
    ...         return "SaslAuthenticateRequest_v1(sasl_auth_bytes=b'u\\x00u\\x00pw')"
    >>> record = logging.LogRecord(
    ...     "aiokafka.conn", logging.DEBUG, "c.py", 1, "Request %d: %s",
    ...     (3, SaslAuthenticateRequest_v1()), None
    ... )
    >>> RedactSasl().filter(record), record.getMessage()
    (True, 'Request 3: SaslAuthenticateRequest_v1(redacted)')
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(_sasl(arg) for arg in record.args):
            record.args = tuple(
                f"{type(arg).__name__}(redacted)" if _sasl(arg) else arg for arg in record.args
            )
        return True


def _sasl(value: object) -> bool:
    return type(value).__name__.startswith(("SaslAuthenticate", "SaslHandShake", "SaslHandshake"))


def logging_config(log_format: str, level: str) -> dict[str, Any]:
    """A dictConfig for the worker: JSON lines, or plain text for people (``console``).

    Both write to stderr without terminal escape codes (Faust's own colored format
    would put them in every log file it is redirected to).
    """
    formatter: dict[str, Any] = (
        {"()": f"{__name__}.JsonFormatter"} if log_format == "json" else {"format": CONSOLE_FORMAT}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "filters": {"sasl": {"()": f"{__name__}.RedactSasl"}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "filters": ["sasl"],
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": LEVELS[level], "handlers": ["default"]},
    }


CONSOLE_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"


def install_logging(log_format: str, level: str) -> None:
    """Configure logging for a worker process: everything it writes goes through it.

    Warnings and uncaught exceptions (of the main thread and of other threads) become
    log records too, so that with ``json`` every line the process writes is JSON.
    """
    logging.config.dictConfig(logging_config(log_format, level))
    logging.captureWarnings(True)
    crashed = logging.getLogger("driftline.crash")

    def main_thread(kind: Any, error: Any, trace: Any) -> None:
        crashed.critical("uncaught exception", exc_info=(kind, error, trace))

    def other_thread(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread is not None else "?"
        crashed.error(
            "uncaught exception in thread %s",
            name,
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),  # type: ignore[arg-type]
        )

    sys.excepthook = main_thread
    threading.excepthook = other_thread
