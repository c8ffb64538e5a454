"""The admin password: checked in constant time, with failed attempts rate-limited per client.

``PWAN_ADMIN_PASSWORD`` unset means admin features are off. After ``max_failures`` wrong
passwords within ``window`` seconds a client is refused (even with the right password) until
the oldest of those failures is ``window`` seconds old.
"""
from __future__ import annotations

import hmac
import os
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass


def admin_password() -> str | None:
    return os.environ.get("PWAN_ADMIN_PASSWORD") or None


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str  # "ok" | "off" | "missing" | "wrong" | "locked"
    retry_after: int = 0

    @property
    def message(self) -> str:
        return {
            "ok": "Admin unlocked.",
            "off": "Admin features are off on this server (set PWAN_ADMIN_PASSWORD to turn them on).",
            "missing": "This needs the admin password.",
            "wrong": "Wrong admin password.",
            "locked": f"Too many wrong passwords: try again in {self.retry_after} s.",
        }[self.reason]


class AdminGuard:
    def __init__(self, max_failures: int | None = None, window: float | None = None,
                 clock=time.monotonic):
        self.max_failures = max_failures or int(os.environ.get("PWAN_ADMIN_MAX_FAILURES", "5"))
        self.window = window or float(os.environ.get("PWAN_ADMIN_LOCKOUT_SECONDS", "60"))
        self.clock = clock
        self._failures: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float]:
        failures = self._failures[client]
        while failures and now - failures[0] >= self.window:
            failures.popleft()
        return failures

    def check(self, password: str | None, client: str = "?") -> Verdict:
        expected = admin_password()
        if expected is None:
            return Verdict(False, "off")
        now = self.clock()
        with self._lock:
            failures = self._recent(client, now)
            if len(failures) >= self.max_failures:
                return Verdict(False, "locked", max(1, int(failures[0] + self.window - now + 0.999)))
            if not password:
                return Verdict(False, "missing")
            if hmac.compare_digest(password.encode(), expected.encode()):
                return Verdict(True, "ok")
            failures.append(now)
            return Verdict(False, "wrong")


#: The one guard of this process (the page and the REST API share the failure counts).
guard = AdminGuard()
