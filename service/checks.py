"""Checks of the inputs the service owns itself: ids, names, search text, pages of results.

The rules of a generation request (prompt, shape, schedule, guidance, seed) belong to
:meth:`core.GenerationRequest.validated`; the service does not check them again.
"""
from __future__ import annotations

from typing import Any

from core.errors import RequestError
from core.text import check_text
from db.models import ALL_STATUSES
from service.errors import ValidationError

#: Largest row id: the id columns are INTEGER, 32-bit signed on PostgreSQL (the smaller of the
#: two databases), so a larger id can name no row anywhere.
MAX_ROW_ID = 2**31 - 1
#: Longest checkpoint, job or model name.
MAX_NAME_CHARS = 200
#: Most rows one list answers.
MAX_PAGE = 500
#: Longest cancel token looked at (a real one has 32 characters).
MAX_TOKEN_CHARS = 200


def check_id(value: Any, what: str) -> int:
    """``value`` as a row id (a whole number from 1 to :data:`MAX_ROW_ID`)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ROW_ID:
        raise ValidationError(f"{what} id must be a whole number from 1 to {MAX_ROW_ID:,}; got {value!r}", "id")
    return value


def check_text_input(value: Any, field: str, label: str, *, required: bool, limit: int) -> str:
    """``value`` stripped: text (None counts as empty) with no control characters (core's rule)
    and at most ``limit`` characters; ``required`` refuses an empty one."""
    value = "" if value is None else value
    if not isinstance(value, str):
        raise ValidationError(f"{label} must be text; got {type(value).__name__}", field)
    try:
        text = check_text(value, field, label).strip()
    except RequestError as exc:
        raise ValidationError(str(exc), exc.field) from None
    if required and not text:
        raise ValidationError(f"{label} is empty", field)
    if len(text) > limit:
        raise ValidationError(
            f"{label} has {len(text):,} characters; at most {limit:,} are allowed. Shorten it.", field
        )
    return text


def check_name(name: Any) -> str:
    """A checkpoint or job name: required, at most :data:`MAX_NAME_CHARS`."""
    return check_text_input(name, "name", "the name", required=True, limit=MAX_NAME_CHARS)


def check_status(status: Any) -> None:
    if status not in ALL_STATUSES:
        raise ValidationError(f"unknown status {status!r}; use one of: {', '.join(ALL_STATUSES)}", "status")


def check_page(limit: Any, offset: Any) -> None:
    """``limit`` from 1 to :data:`MAX_PAGE`, ``offset`` 0 or more."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise ValidationError(f"limit must be a whole number from 1 to {MAX_PAGE}", "limit")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValidationError("offset must be a whole number, 0 or more", "offset")


def page_of(page) -> dict[str, Any]:
    """A :class:`db` page of rows as the answer of a list call."""
    return {"items": page.items, "total": page.total, "limit": page.limit, "offset": page.offset}
