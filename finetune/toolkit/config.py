"""Typed training settings: each dataclass field declares its help text and the values it accepts
(:func:`setting`); one generic check refuses anything else, naming the field; the command line
is derived from the same fields, so a setting is described once."""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from dataclasses import MISSING


class ConfigError(ValueError):
    """A training config that cannot run; ``field`` names the setting."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def setting(default=MISSING, *, help: str = "", lo=None, hi=None, lo_open: bool = False,  # noqa: A002
            hi_open: bool = False, choices=None, length: int | None = None, example: str = "",
            factory=None, cli: bool = True):
    """A dataclass field whose metadata says what it accepts: numbers in ``[lo, hi]`` (``lo_open``
    / ``hi_open`` exclude an end), one of ``choices``, lists of ``length`` items (each item in the
    range); ``example`` is shown when a comma-separated list cannot be read; ``cli=False`` keeps
    it off the command line."""
    meta = {"help": help, "lo": lo, "hi": hi, "lo_open": lo_open, "hi_open": hi_open, "choices": choices,
            "length": length, "example": example, "cli": cli}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _kind(hint) -> tuple[type, type | None, bool]:
    """``(container or scalar type, item type, None allowed)``: ``list[int] | None`` gives
    ``(list, int, True)``."""
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        optional = type(None) in args
        hint = next(a for a in args if a is not type(None))
    origin = typing.get_origin(hint) or hint
    item = None
    if origin in (list, tuple):
        item = (typing.get_args(hint) or (None,))[0]
    return origin, item, optional


def _range_text(kind: type, meta) -> str:
    lo, hi = meta.get("lo"), meta.get("hi")
    if kind is int:
        if lo is not None and hi is not None:
            return f" from {lo:,} to {hi:,}"
        return f" of at least {lo:,}" if lo is not None else ""
    if lo is not None and hi is not None:
        return f" in {'(' if meta.get('lo_open') else '['}{lo:g}, {hi:g}{')' if meta.get('hi_open') else ']'}"
    if lo is not None:
        return f" {'above' if meta.get('lo_open') else 'of at least'} {lo:g}"
    return ""


def _number_ok(value, kind: type, meta) -> bool:
    if isinstance(value, bool) or not isinstance(value, int if kind is int else (int, float)):
        return False
    if kind is float and not math.isfinite(float(value)):
        return False
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and (value <= lo if meta.get("lo_open") else value < lo):
        return False
    return hi is None or (value < hi if meta.get("hi_open") else value <= hi)


def _problem(name: str, value, kind: type, item, optional: bool, meta) -> str | None:
    """Why ``value`` does not fit the field, or None."""
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        return f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}"
    if kind is bool and not isinstance(value, bool):
        return f"{name} must be true or false; got {value!r}"
    if kind is str and not isinstance(value, str):
        return f"{name} must be text{' or null' if optional else ''}; got {value!r}"
    if kind in (int, float) and not _number_ok(value, kind, meta):
        return f"{name} must be {'a whole number' if kind is int else 'a number'}{_range_text(kind, meta)}; got {value!r}"
    if kind in (list, tuple):
        length = meta.get("length")
        fits = isinstance(value, (list, tuple)) and (length is None or len(value) == length)
        if fits and item in (int, float):
            fits = all(_number_ok(v, item, meta) for v in value)
        if not fits:
            what = "whole numbers" if item is int else "numbers" if item is float else "values"
            count = f"{length} " if length else ""
            return f"{name} must list {count}{what}{_range_text(item or float, meta)}; got {value!r}"
    return None


def check_fields(cfg, error: type[ConfigError] = ConfigError) -> None:
    """Refuse (``error(message, field)``) the first field of the dataclass ``cfg`` whose value
    does not fit its type and metadata; lists and tuples are normalised in place to the declared
    container and item type (JSON gives lists where a tuple is declared)."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        kind, item, optional = _kind(hints[f.name])
        value = getattr(cfg, f.name)
        if value is None and optional:
            continue
        problem = _problem(f.name, value, kind, item, optional, f.metadata)
        if problem:
            raise error(problem, f.name)
        if kind in (list, tuple):
            setattr(cfg, f.name, kind(item(v) if item in (int, float) else v for v in value))


def config_from_dict(cls, data: dict, error: type[ConfigError] = ConfigError):
    """``cls(**data)``, refusing unknown settings by name."""
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise error(f"unknown training setting(s): {', '.join(unknown)}", unknown[0])
    return cls(**data)


# ----------------------------------------------------------------------------- command line
def parse_bool(text: str) -> bool:
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false")


def _default(f: dataclasses.Field):
    return f.default_factory() if f.default_factory is not MISSING else f.default


def add_flags(parser: argparse.ArgumentParser, cls, *, required: tuple[str, ...] = (),
              skip: tuple[str, ...] = ()) -> None:
    """One ``--name-with-dashes`` flag per field of the dataclass ``cls``, with the field's
    default, type, choices and help. Lists are written comma-separated (read back by
    :func:`config_from_flags`); a boolean is ``--flag`` alone or ``--flag true|false``."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind, _, _ = _kind(hints[f.name])
        if f.name in skip or not f.metadata.get("cli", True) or kind not in (bool, int, float, str, list, tuple):
            continue
        default = _default(f)
        text = f.metadata.get("help", "").replace("%", "%%")
        shown = text if not text or "default" in text or f.name in required else f"{text} (default: %(default)s)"
        kw: dict = {"dest": f.name, "help": shown or None}
        if f.name in required:
            kw["required"] = True
        elif kind in (list, tuple):
            kw["default"] = None if default is None else ",".join(map(str, default))
        else:
            kw["default"] = default
        if kind is bool:
            kw.update(nargs="?", const=True, type=parse_bool, metavar="BOOL")
        else:
            kw["type"] = str if kind in (list, tuple) else kind
        if f.metadata.get("choices") is not None:
            kw["choices"] = list(f.metadata["choices"])
        parser.add_argument(f"--{f.name.replace('_', '-')}", **kw)


def config_from_flags(cls, args: argparse.Namespace, error: type[ConfigError] = ConfigError, **overrides):
    """The dataclass ``cls`` from flags written by :func:`add_flags` (and ``overrides``): a
    comma-separated list that cannot be read raises ``error`` naming the field; an empty one is
    None where the field allows None."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if not hasattr(args, f.name):
            continue
        value = getattr(args, f.name)
        kind, item, optional = _kind(hints[f.name])
        if kind in (list, tuple) and isinstance(value, str):
            if not value.strip():
                value = None if optional else []
            else:
                try:
                    value = kind((item or str)(v) for v in value.split(","))
                except ValueError:
                    example = f.metadata.get("example") or "values separated by commas"
                    raise error(f"{f.name} {value!r}: write {example}", f.name) from None
        values[f.name] = value
    values.update(overrides)
    return cls(**values)
