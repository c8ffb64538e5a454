"""The admin password: checked in constant time, with failed attempts rate-limited per client.

``PWAN_ADMIN_PASSWORD`` unset means admin features are off. After ``max_failures`` wrong
passwords within ``window`` seconds a client is refused (even with the right password) until
the oldest of those failures is ``window`` seconds old. The failures are kept in the database
(:mod:`db.admin`), so several page processes behind a proxy share one count per client.

A client is its socket peer address; behind a proxy named in ``PWAN_TRUSTED_PROXIES`` (IPs or
CIDRs, comma-separated) it is the last address in ``X-Forwarded-For`` that is not a trusted
proxy. Without ``PWAN_TRUSTED_PROXIES`` the header is never believed (anyone can send it).
"""
from __future__ import annotations

import hmac
import ipaddress
import time
from dataclasses import dataclass

from db import admin as db_admin
from settings import get_settings


def admin_password() -> str | None:
    return get_settings().admin_password


def _trusted(address: str, networks) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_key(peer: str | None, forwarded_for: str | list[str] | None = None) -> str:
    """Who is asking: the socket ``peer``, or, when the peer is a trusted proxy, the last
    ``X-Forwarded-For`` hop that is not one (hops to its left are the client's own claims)."""
    peer = (peer or "?").strip()
    networks = get_settings().trusted_proxies
    if not networks or not _trusted(peer, networks) or not forwarded_for:
        return peer
    if isinstance(forwarded_for, list):
        forwarded_for = ",".join(forwarded_for)
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, networks):
            return hop
    return hops[0] if hops else peer  # every hop is a proxy of ours: the first one asked


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
    """Checks admin passwords; the failure counts live in the database, shared by every guard
    (and process) on it. ``clock``: unix seconds (a wall clock, the same in every process)."""

    def __init__(self, max_failures: int | None = None, window: float | None = None,
                 clock=time.time):
        self.max_failures = max_failures or get_settings().admin_max_failures
        self.window = window or get_settings().admin_lockout_seconds
        self.clock = clock

    def check(self, password: str | None, client: str = "?") -> Verdict:
        expected = admin_password()
        if expected is None:
            return Verdict(False, "off")
        if not password:
            outcome = "missing"
        elif hmac.compare_digest(password.encode(), expected.encode()):
            outcome = "ok"
        else:
            outcome = "wrong"
        result = db_admin.attempt(client, outcome, now=self.clock(), window=self.window,
                                  max_failures=self.max_failures)
        if result.outcome == "locked":
            return Verdict(False, "locked", max(1, int(result.retry_after + 0.999)))
        return Verdict(result.outcome == "ok", result.outcome)


#: The guard of this process (the page and the REST API; the counts are in the database).
guard = AdminGuard()
