"""Structured logs: one JSON object per line (``DRIFTLINE_LOG_FORMAT=json``, the default)."""

from __future__ import annotations

import logging
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


def logging_config(log_format: str, level: str) -> dict[str, Any] | None:
    """A dictConfig for the worker (None: Faust's own colored console format)."""
    if log_format != "json":
        return None
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": LEVELS[level], "handlers": ["default"]},
    }
