"""The configuration of driftline's confluent-kafka (librdkafka) clients, made in one place.

Every producer and admin client the worker and the CLI make takes its configuration
from ``librdkafka_config``, so that they all behave alike. librdkafka writes its own
log lines (``%3|...|FAIL|rdkafka#producer-1| ...``) to stderr unless it is given a
logger: with one, its lines go through Python logging (and so into the worker's JSON
log). They arrive when the client is polled: an admin client is polled after each call.
"""

from __future__ import annotations

import logging
from typing import Any

#: Where librdkafka's log lines go.
LIBRDKAFKA_LOG = logging.getLogger("driftline.librdkafka")


def librdkafka_config(bootstrap: str, **options: Any) -> dict[str, Any]:
    """A confluent-kafka client configuration for ``bootstrap``, plus ``options``
    (librdkafka's names, e.g. ``{"enable.idempotence": True}``).

    >>> config = librdkafka_config("127.0.0.1:9092", **{"linger.ms": 5})
    >>> config["bootstrap.servers"], config["linger.ms"], config["logger"].name
    ('127.0.0.1:9092', 5, 'driftline.librdkafka')
    """
    return {
        "bootstrap.servers": bootstrap,
        "logger": LIBRDKAFKA_LOG,
        # A broker closing an idle connection is not news (tansu closes them often).
        "log.connection.close": False,
        **options,
    }
