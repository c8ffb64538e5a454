"""Every ``PWAN_*`` setting of the studio: one frozen dataclass, read from the environment once.

Each field of :class:`Settings` carries its variable name and a one-line meaning in its field
metadata; its type is the annotation and its default the field default. Defaults computed from
other settings (the URLs from the data folder, the reap interval from the stale time) are filled
in by the object itself, and so are the checks between settings.

* :func:`get_settings`: ``os.environ`` parsed and validated on first use, then cached.
* :func:`reload_settings`: drop the cache; the next :func:`get_settings` reads the environment
  again (tests, :func:`workers.configure`, code that sets a variable for what it calls next).
* :func:`overridden`: a block with some variables set, restored afterwards.
* :func:`read_settings`: parse any mapping, e.g. the environment of a child process.

Standard library only, so that ``db`` and ``core`` import it without pulling in anything heavy.
``python -m settings`` prints the README's configuration table.
"""
from __future__ import annotations

import contextlib
import functools
import ipaddress
import os
import sys
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

ROOT = Path(__file__).resolve().parent
Network = typing.Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


class SettingsError(ValueError):
    """A ``PWAN_*`` variable that cannot be used; the message names the variable."""


def _var(env: str, doc: str, default: Any = None, *, shown: str | None = None,
         minimum: float | None = None, above: float | None = None, secret: bool = False) -> Any:
    """A setting: ``env`` is its variable, ``doc`` its meaning, ``shown`` how its default reads
    in the README (when it is computed); ``minimum`` (inclusive) and ``above`` (exclusive) bound
    numbers; a ``secret`` stays out of the object's repr (and so out of logs)."""
    return field(default=default, repr=not secret,
                 metadata={"env": env, "doc": doc, "shown": shown, "minimum": minimum, "above": above})


@dataclass(frozen=True)
class Settings:
    """The studio's configuration; build it with :func:`get_settings` or :func:`read_settings`."""

    # where things live
    data_dir: Path = _var("PWAN_DATA_DIR", "database, broker file, outputs, checkpoints",
                          Path("./data"), shown="./data")
    database_url: str | None = _var(
        "PWAN_DATABASE_URL", "any SQLAlchemy URL; PostgreSQL for several machines",
        shown="sqlite:///$PWAN_DATA_DIR/pwan.sqlite3")
    broker_url: str | None = _var(
        "PWAN_BROKER_URL", "Celery broker; `redis://host:6379/0` to scale out",
        shown="sqla+sqlite:///$PWAN_DATA_DIR/broker.sqlite3")
    # models
    model: str | None = _var("PWAN_MODEL", "default model preset",
                             shown="`wan2.1-1.3b` with a GPU, else `mini`, else `tiny`")
    mini_path: Path = _var("PWAN_MINI_PATH", "folder of the `mini` preset",
                           ROOT / "models" / "mini", shown="models/mini")
    wan_path: str | None = _var("PWAN_WAN_PATH", "local folder of Wan2.1-T2V-1.3B-Diffusers",
                                shown="unset (hub id)")
    # admin
    admin_password: str | None = _var("PWAN_ADMIN_PASSWORD",
                                      "guards finetune jobs and checkpoint management",
                                      shown="unset: admin off", secret=True)
    admin_max_failures: int = _var("PWAN_ADMIN_MAX_FAILURES",
                                   "wrong admin passwords a client may send within the lockout window",
                                   5, minimum=1)
    admin_lockout_seconds: float = _var("PWAN_ADMIN_LOCKOUT_SECONDS",
                                        "the lockout window: a locked-out client waits this long",
                                        60.0, above=0)
    trusted_proxies: tuple[Network, ...] = _var(
        "PWAN_TRUSTED_PROXIES",
        "IPs or CIDRs of your reverse proxies (`10.0.0.5,10.1.0.0/16`): behind them the admin lockout "
        "counts per client from `X-Forwarded-For` (its last hop that is not a trusted proxy)",
        (), shown="unset: `X-Forwarded-For` is ignored")
    # workers
    heartbeat_seconds: float = _var("PWAN_HEARTBEAT_SECONDS",
                                    "how often a running run or job writes its heartbeat", 5.0, above=0)
    stale_seconds: float = _var("PWAN_STALE_SECONDS",
                                "no heartbeat for this long: the worker is lost (at least twice the heartbeat)",
                                60.0, above=0)
    reap_seconds: float | None = _var("PWAN_REAP_SECONDS", "how often each worker looks for lost runs",
                                      shown="stale / 4", above=0)
    max_requeues: int = _var("PWAN_MAX_REQUEUES", "re-enqueues after a lost worker, then `failed`",
                             1, minimum=0)
    progress_seconds: float = _var("PWAN_PROGRESS_SECONDS", "least time between two progress writes",
                                   0.25, above=0)
    model_cache: int = _var("PWAN_MODEL_CACHE",
                            "resident pipelines per worker, keyed (preset, checkpoint)", 2, minimum=1)
    preload: tuple[str, ...] = _var("PWAN_PRELOAD",
                                    "presets a worker loads at start, comma separated, e.g. `mini`",
                                    (), shown="unset")
    visibility_timeout: int = _var("PWAN_VISIBILITY_TIMEOUT",
                                   "Redis broker: seconds before an unacknowledged message is re-delivered",
                                   24 * 3600, minimum=60)
    broker_poll_seconds: float = _var("PWAN_BROKER_POLL_SECONDS",
                                      "SQL broker: how often an idle worker polls", 0.1, above=0)
    exit_with_parent: int | None = _var("PWAN_EXIT_WITH_PARENT",
                                        "set by `app.py` for its embedded worker: shut down when "
                                        "this process id is no longer the parent",
                                        shown="unset", minimum=1)

    def __post_init__(self) -> None:
        """Fill in the computed defaults, then check bounds and the rules between settings."""
        data_dir = Path(self.data_dir).expanduser().resolve()
        derived = {
            "data_dir": data_dir,
            "database_url": self.database_url or f"sqlite:///{data_dir / 'pwan.sqlite3'}",
            "broker_url": self.broker_url or f"sqla+sqlite:///{data_dir / 'broker.sqlite3'}",
            "reap_seconds": self.reap_seconds or self.stale_seconds / 4,
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)
        for f in fields(self):
            _check_bounds(f, getattr(self, f.name))
        if self.stale_seconds < 2 * self.heartbeat_seconds:
            raise SettingsError(
                f"PWAN_STALE_SECONDS ({self.stale_seconds:g}) must be at least twice PWAN_HEARTBEAT_SECONDS "
                f"({self.heartbeat_seconds:g}), or healthy runs would be declared lost"
            )


def _check_bounds(f, value: Any) -> None:
    env, minimum, above = f.metadata["env"], f.metadata["minimum"], f.metadata["above"]
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if minimum is not None and value < minimum:
        raise SettingsError(f"{env}={value!r} must be at least {minimum:g}")
    if above is not None and value <= above:
        raise SettingsError(f"{env}={value!r} must be greater than {above:g}")


# ---------------------------------------------------------------------------- parsing
def _whole(env: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{env}={raw!r} is not a whole number") from None


def _number(env: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{env}={raw!r} is not a number") from None


def _names(env: str, raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _networks(env: str, raw: str) -> tuple[Network, ...]:
    networks = []
    for entry in _names(env, raw):
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise SettingsError(f"{env}: {entry!r} is not an IP address "
                                "or a network like 10.0.0.0/8") from None
    return tuple(networks)


_PARSERS = {
    int: _whole,
    float: _number,
    str: lambda env, raw: raw,
    Path: lambda env, raw: Path(raw),
    tuple[str, ...]: _names,
    tuple[Network, ...]: _networks,
}


def _parser(hint: Any):
    """The parser for a field's type; ``X | None`` parses as ``X``."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            hint = args[0]
    return _PARSERS[hint]


def read_settings(environ: Mapping[str, str]) -> Settings:
    """Settings from ``environ``; an unset or blank variable takes its default."""
    hints = typing.get_type_hints(Settings)
    values = {}
    for f in fields(Settings):
        raw = environ.get(f.metadata["env"])
        if raw is not None and raw.strip() != "":
            values[f.name] = _parser(hints[f.name])(f.metadata["env"], raw.strip())
    return Settings(**values)


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """This process's settings, read from ``os.environ`` on the first call."""
    return read_settings(os.environ)


def reload_settings() -> None:
    """Forget the cached settings: the next :func:`get_settings` reads the environment again."""
    get_settings.cache_clear()


@contextlib.contextmanager
def overridden(**variables: str):
    """Set environment variables for the block (``overridden(PWAN_MINI_PATH="...")``), then put
    back what was there; settings are re-read on the way in and out. A phase that points the
    studio at its own folders must not leave them set for whatever runs next in the process."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    reload_settings()
    try:
        yield get_settings()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        reload_settings()


# ---------------------------------------------------------------------------- documentation
def _shown_default(f) -> str:
    if f.metadata["shown"] is not None:
        shown = f.metadata["shown"]
        return shown if "`" in shown or shown.startswith("unset") else f"`{shown}`"
    default = f.default
    return f"`{default:g}`" if isinstance(default, float) else f"`{default}`"


def table_rows() -> list[tuple[str, str, str]]:
    """``(variable, default, meaning)`` for every setting, in field order."""
    return [(f"`{f.metadata['env']}`", _shown_default(f), f.metadata["doc"]) for f in fields(Settings)]


def markdown_table() -> str:
    """The README's configuration table."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    lines += [f"| {name} | {default} | {doc} |" for name, default, doc in table_rows()]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(markdown_table() + "\n")
