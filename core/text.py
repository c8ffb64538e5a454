"""The rule for text a person types (prompts, names): printable, with ordinary whitespace.

Control characters other than space, tab, newline and carriage return (Unicode category Cc, NUL
included) and lone surrogates (Cs) are refused: PostgreSQL cannot store them (a NUL was a 500
there and accepted on SQLite), and they are never part of a prompt on purpose.
"""

from __future__ import annotations

import unicodedata

from .errors import RequestError

ALLOWED_WHITESPACE = frozenset(" \t\n\r")


def first_control_character(text: str) -> tuple[int, str] | None:
    """``(index, character)`` of the first refused character in ``text``, or None."""
    for i, ch in enumerate(text):
        if ch not in ALLOWED_WHITESPACE and unicodedata.category(ch) in ("Cc", "Cs"):
            return i, ch
    return None


def check_text(text: str, field: str, label: str) -> str:
    """``text`` unchanged, or a :class:`RequestError` naming ``field`` and the character's
    position (1-based, in the text as given)."""
    found = first_control_character(text)
    if found is not None:
        i, ch = found
        kind = "a surrogate character" if unicodedata.category(ch) == "Cs" else "a control character"
        raise RequestError(f"{label} contains {kind} (U+{ord(ch):04X} at position {i + 1}); remove it", field)
    return text
