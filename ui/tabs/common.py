"""What the page's tabs share: page-wide state, readable errors, and the model and schedule choices."""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import gradio as gr

import service
from ui import views

log = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint:"


class PageError(Exception):
    """A message for the person using the page (shown in the page, never a traceback)."""


def friendly(fn):
    """Turn the service's errors and surprises into a gr.Error with a readable message."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as exc:  # noqa: BLE001 - the person's mistakes are shown, bugs logged
            if isinstance(exc, (PageError, ValueError)) or service.is_user_error(exc):
                raise gr.Error(str(exc), print_exception=False) from None
            log.exception("page action %s failed", fn.__name__)
            raise gr.Error(f"Something went wrong on the server ({type(exc).__name__}: {exc}). "
                           "The details are in the server log.", print_exception=False) from None

    return wrapper


@dataclass
class Shared:
    """Page-wide pieces the tabs read and write: the tab strip (to switch tabs), the banner, whether
    this browser session unlocked the admin tab, and the cancel tokens of the runs it submitted
    (``{"<run id>": token}``, kept server-side in the session's state)."""

    tabs: gr.Tabs
    banner: gr.Markdown
    admin_ok: gr.State
    held_tokens: gr.State


def cancel_with_session(run_id: int, held: dict | None, is_admin: bool) -> dict:
    """Cancel a run with the token this browser session holds for it, or as the admin."""
    token = (held or {}).get(str(int(run_id)))
    if token is None and not is_admin:
        raise PageError(f"run #{int(run_id)} was not started from this browser tab: cancelling it "
                        "needs the admin password (unlock the Admin tab)")
    return service.cancel_run(int(run_id), token, admin=bool(is_admin))


# ---------------------------------------------------------------------------- choices
def model_choices() -> list[tuple[str, str]]:
    """Presets, then registered checkpoints (value ``checkpoint:<id>``)."""
    choices = []
    for item in service.list_checkpoints():
        if item["builtin"]:
            choices.append((f"{item['name']} (preset)", item["name"]))
        else:  # a distilled checkpoint by its card's label: "mini-distilled — 2-2-1, 5 steps, ..."
            choices.append((views.checkpoint_label(item), f"{CHECKPOINT_PREFIX}{item['id']}"))
    return choices


def teacher_choices() -> list[tuple[str, str]]:
    """The registered checkpoints a distillation may take as its teacher (all but distilled
    students), as (label, name); the server checks the rest (the base, the folder)."""
    return [(f"{c['name']} (over {c['base']})", c["name"]) for c in service.list_checkpoints()
            if not c["builtin"] and (c.get("card") or {}).get("trained_for") != "few-step"]


def model_lock(value: str | None) -> dict[str, str] | None:
    """What Generate locks for this model choice (:func:`ui.views.recipe_lock`): a distilled
    checkpoint's recipe, else None."""
    try:
        _preset, checkpoint_id = split_model(value)
        if checkpoint_id is None:
            return None
        row = service.get_checkpoint(checkpoint_id)
    except Exception:  # noqa: BLE001 - an unknown model is reported when it is used
        return None
    return views.recipe_lock(row.get("card"), row["name"])


def schedule_choices(model_value: str | None = None) -> list[str]:
    """The schedule presets, plus the few-step schedules a distilled checkpoint recommends."""
    choices = list(views.SCHEDULE_PRESETS)
    if model_value and str(model_value).startswith(CHECKPOINT_PREFIX):
        try:
            card = service.get_checkpoint(int(model_value[len(CHECKPOINT_PREFIX):]))["card"] or {}
        except Exception:  # noqa: BLE001 - a missing card just adds nothing
            card = {}
        extra = []
        for key in ("recommended_schedules", "schedules", "schedule"):  # finetune/ writes the first two
            value = card.get(key)
            extra += [value] if isinstance(value, str) else list(value or [])
        for sched in reversed(list(dict.fromkeys(e for e in extra if isinstance(e, str)))):
            if sched in choices:
                choices.remove(sched)
            choices.insert(0, sched)
    return choices


def split_model(value: str | None) -> tuple[str | None, int | None]:
    """``"tiny"`` -> ("tiny", None); ``"checkpoint:3"`` -> (None, 3)."""
    value = (value or "").strip()
    if value.startswith(CHECKPOINT_PREFIX):
        try:
            return None, int(value[len(CHECKPOINT_PREFIX):])
        except ValueError:
            raise PageError(f"unknown model {value!r}") from None
    return value or None, None


def model_guidance(value: str | None) -> str:
    """The guidance box's text for a model choice: its card's recommended guidance (per stage for
    a checkpoint that recommends one value per stage of its plan), else Wan's 5."""
    from core import recommended_guidance

    try:
        preset, checkpoint_id = split_model(value)
        card, stages = None, None
        if checkpoint_id is not None:
            row = service.get_checkpoint(checkpoint_id)
            preset, card = row["base"], row["card"] or {}
            stages = card.get("stages")
        g = recommended_guidance(preset or "", card, stages=stages)
    except Exception:  # noqa: BLE001 - an unknown model is reported when it is used
        g = float(views.DEFAULT_GUIDANCE)
    return ", ".join(f"{v:g}" for v in g) if isinstance(g, list) else f"{g:g}"


def done_run_choices() -> list[tuple[str, int]]:
    """The finished runs, newest first, as Compare's (label, id) choices."""
    page = service.list_runs(status="done", limit=200)
    return [(views.run_title(r), r["id"]) for r in page["items"]]


def initial_models() -> list[tuple[str, str]]:
    """The model choices when the page is built (each visit reloads them)."""
    try:
        return model_choices()
    except Exception:  # noqa: BLE001 - the load event shows why in a banner
        from core import list_presets

        return [(f"{p} (preset)", p) for p in list_presets()]


def initial_model(choices: list[tuple[str, str]]) -> str | None:
    """The model selected by default: the default preset (or its shipped pyramidal finetune)."""
    from core import default_preset

    values = [v for _, v in choices]
    default = default_preset()
    return shipped_pyramidal(default, values) if default in values else (values[0] if values else None)


def shipped_pyramidal(preset: str, values: list[str]) -> str:
    """``preset``, or its pyramidal finetune shipped beside it (``models/<preset>-pyramidal``,
    registered at start-up) when there is one: the page's default mode is pyramidal, and a
    pyramidal plan is meant for the finetuned model."""
    try:
        row = service.shipped_pyramidal(preset)
    except Exception:  # noqa: BLE001 - the plain preset is a fine default
        row = None
    value = f"{CHECKPOINT_PREFIX}{row['id']}" if row else None
    return value if value in values else preset
