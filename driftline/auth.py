"""API keys, scopes and per-key rate limits.

A key is ``dl_<key id>_<secret>``. The key id is public (it names the key in lists
and logs); the secret has 256 bits of entropy and only its SHA-256 is stored, so a
leaked database does not leak usable keys. A key belongs to one tenant and has one
scope: ``read`` (GET), ``write`` (read, and actions such as replaying a delivery or
receiving Alertmanager notifications) or ``admin`` (write, and managing endpoints).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import Literal

Scope = Literal["read", "write", "admin"]
SCOPES: tuple[Scope, ...] = ("read", "write", "admin")
_KEY = re.compile(r"^dl_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$")
TENANT = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,127}$")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a key of one tenant with one scope."""

    key_id: str
    tenant: str
    scope: Scope

    def allows(self, needed: Scope) -> bool:
        """Whether this key's scope includes ``needed``.

        >>> Principal("k", "t", "write").allows("read"), Principal("k", "t", "read").allows("write")
        (True, False)
        """
        return SCOPES.index(self.scope) >= SCOPES.index(needed)


def new_key() -> tuple[str, str, str]:
    """A fresh key: (the key to hand out once, its id, the hash to store)."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return f"dl_{key_id}_{secret}", key_id, secret_hash(secret)


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_key(key: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None.

    >>> parse_key("dl_0123456789ab_" + "x" * 43)[0], parse_key("nope")
    ('0123456789ab', None)
    """
    match = _KEY.match(key.strip())
    return None if match is None else (match.group(1), match.group(2))


def matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(secret_hash(secret), stored_hash)


class RateLimiter:
    """A token bucket per key: ``rate`` requests per second, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}

    def acquire(self, key: str, now: float | None = None) -> float:
        """0 if the request may go ahead, else the seconds until it may.

        >>> limiter = RateLimiter(rate=1.0, burst=2)
        >>> [limiter.acquire("k", now=0.0) for _ in range(3)]
        [0.0, 0.0, 1.0]
        >>> limiter.acquire("k", now=1.0)
        0.0
        """
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate
