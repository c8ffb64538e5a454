"""The Gradio page: Generate, Compare, History, Admin.

The page never runs a model. It writes runs through :mod:`service` and follows them by
polling the database (a ``gr.Timer`` every 0.5 s while something is in flight). Videos are
served by the REST API (``/api/runs/{id}/video``) and played by plain ``<video>`` elements,
so two of them can play in step (``static/studio.js``).
"""
from __future__ import annotations

import functools
import json
import logging
from typing import Any

import gradio as gr

from ui import views
from ui.auth import admin_password, client_key, guard

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
CHECKPOINT_PREFIX = "checkpoint:"
HISTORY_HEADERS = ["id", "still", "status", "model", "mode", "plan", "size", "seed", "created (UTC)", "seconds",
                   "prompt"]
#: The still column is HTML (an <img> from /api/runs/{id}/still); the others plain text.
HISTORY_TYPES = ["str", "html"] + ["str"] * (len(HISTORY_HEADERS) - 2)
EMPTY_HISTORY = [[""] * len(HISTORY_HEADERS)]
JOB_SUMMARY_KEYS = ("data", "steps", "schedule", "lr", "lora_rank", "teacher", "out")
DEFAULT_JOB_CONFIG = json.dumps({"data": "world:64", "steps": 50, "schedule": "2-2-1"}, indent=2)


def _api():
    import service

    return service


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
            if isinstance(exc, (PageError, ValueError)) or _api().is_user_error(exc):
                raise gr.Error(str(exc), print_exception=False) from None
            log.exception("page action %s failed", fn.__name__)
            raise gr.Error(f"Something went wrong on the server ({type(exc).__name__}: {exc}). "
                           "The details are in the server log.", print_exception=False) from None

    return wrapper


# ---------------------------------------------------------------------------- choices
def model_choices() -> list[tuple[str, str]]:
    """Presets, then registered checkpoints (value ``checkpoint:<id>``)."""
    choices = []
    for item in _api().list_checkpoints():
        if item["builtin"]:
            choices.append((f"{item['name']} (preset)", item["name"]))
        else:
            choices.append((f"{item['name']} ({item['kind']} over {item['base']})",
                            f"{CHECKPOINT_PREFIX}{item['id']}"))
    return choices


def schedule_choices(model_value: str | None = None) -> list[str]:
    """The schedule presets, plus the few-step schedules a distilled checkpoint recommends."""
    choices = list(views.SCHEDULE_PRESETS)
    if model_value and str(model_value).startswith(CHECKPOINT_PREFIX):
        try:
            card = _api().get_checkpoint(int(model_value[len(CHECKPOINT_PREFIX):]))["card"] or {}
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
            row = _api().get_checkpoint(checkpoint_id)
            preset, card = row["base"], row["card"] or {}
            stages = card.get("stages")
        g = recommended_guidance(preset or "", card, stages=stages)
    except Exception:  # noqa: BLE001 - an unknown model is reported when it is used
        g = float(views.DEFAULT_GUIDANCE)
    return ", ".join(f"{v:g}" for v in g) if isinstance(g, list) else f"{g:g}"


def done_run_choices() -> list[tuple[str, int]]:
    page = _api().list_runs(status="done", limit=200)
    return [(views.run_title(r), r["id"]) for r in page["items"]]


# ---------------------------------------------------------------------------- generate
def submit(prompt, negative_prompt, model, mode, schedule, guidance, seed, random_seed, size, compare):
    """Validate and queue a run (or, with ``compare``, the original and the pyramid on the
    same prompt and seed). Returns ``{"run_ids": [...], "comparison_id": ..., "seed": ...,
    "cancel_tokens": {"<run id>": token}}`` (the tokens stay in the browser session's state)."""
    api = _api()
    model_name, checkpoint = split_model(model)
    frames, height, width = views.parse_size(size or views.DEFAULT_SIZE)
    # the box still showing the model's recommendation: the server applies it to the plan that runs
    # (a per-stage recommendation would not fit the original, or a plan with other stages)
    # (an emptied box names no guidance either)
    text = str(guidance or "").replace(" ", "")
    untouched = not text or text == model_guidance(model).replace(" ", "")
    guidance_value = None if untouched else views.parse_guidance(guidance)
    if random_seed or seed is None or seed == "":
        seed_value = None
    else:
        seed_value = float(seed)
        if not seed_value.is_integer():
            raise PageError(f"seed must be a whole number; got {seed}")
        seed_value = int(seed_value)
    common = dict(negative_prompt=negative_prompt or "", model=model_name, checkpoint=checkpoint,
                  guidance=guidance_value, seed=seed_value, frames=frames, height=height, width=width)
    if compare:
        group = api.submit_comparison(prompt, schedule=schedule or None, **common)
        return {"run_ids": [r["id"] for r in group["runs"]], "comparison_id": group["id"],
                "seed": group["seed"],
                "cancel_tokens": {str(r["id"]): r["cancel_token"] for r in group["runs"]}}
    row = api.submit_run(prompt, mode=mode or "pyramidal", schedule=schedule or None, **common)
    return {"run_ids": [row["id"]], "comparison_id": None, "seed": row["seed"],
            "cancel_tokens": {str(row["id"]): row["cancel_token"]}}


def cancel_with_session(run_id: int, held: dict | None, is_admin: bool) -> dict:
    """Cancel a run with the token this browser session holds for it, or as the admin."""
    token = (held or {}).get(str(int(run_id)))
    if token is None and not is_admin:
        raise PageError(f"run #{int(run_id)} was not started from this browser tab: cancelling it "
                        "needs the admin password (unlock the Admin tab)")
    return _api().cancel_run(int(run_id), token, admin=bool(is_admin))


def follow(watch: dict | None):
    """One poll: progress cards, the preview when it exists, the videos and card at the end."""
    api = _api()
    watch = dict(watch or {})
    ids = watch.get("run_ids") or []
    if not ids:
        return (gr.skip(),) * 5 + (gr.Timer(active=False),)
    rows = []
    for run_id in ids:
        try:
            rows.append(api.get_run(run_id))
        except api.NotFoundError:
            continue
    if not rows:
        return ("<p>This run was deleted.</p>", "", "", "", watch, gr.Timer(active=False))
    labels = (["original", "pyramidal"] if watch.get("comparison_id") and len(rows) == 2
              else [None] * len(rows))
    progress = "".join(views.progress_html(r, f"{lab}: {views.run_title(r)}" if lab else None)
                       for r, lab in zip(rows, labels))

    preview = ""
    preview_path = _api().preview_path

    for r in rows:
        if r["mode"] == "pyramidal" and r["status"] in ("running", "done") and (
                r.get("preview_path") or preview_path(r["id"]).is_file()):
            preview = views.preview_html(r["id"], str(r["stage"] or 0))

    finished = all(r["status"] in views.FINAL for r in rows)
    done = [r for r in rows if r["status"] == "done"]
    videos, card = "", ""
    if finished:
        if done:
            videos = views.videos_html(done, group=f"gen-{ids[0]}")
        original = rows[0] if watch.get("comparison_id") and len(rows) == 2 else None
        shown = rows[-1]
        card = views.run_card(shown, original)
        if original is not None and original["status"] == "done":
            card += "\n\n" + views.run_card(original).split("\n\n|", 1)[0]
    outputs = {"progress": progress, "preview": preview, "videos": videos, "card": card}
    last = watch.get("last") or {}
    result = tuple(gr.skip() if last.get(k) == v else v for k, v in outputs.items())
    watch["last"] = outputs
    return result + (watch, gr.Timer(active=not finished))


# ---------------------------------------------------------------------------- compare
def compare(a, b):
    """Videos side by side (in step), the cost table, PSNR/SSIM."""
    from ui import compare as cmp

    if not a or not b:
        raise PageError("pick two finished runs to compare")
    result = cmp.compare_runs(int(a), int(b))
    ra, rb = result["runs"]
    videos = views.videos_html([ra, rb], group=f"cmp-{ra['id']}-{rb['id']}")
    import pandas as pd

    rows = result["table"]
    table = pd.DataFrame(rows[1:], columns=["", f"A: {rows[0][1]}", f"B: {rows[0][2]}", "A / B"])
    q = result["quality"]
    if q["comparable"]:
        psnr = "identical (∞ dB)" if q["psnr_mean"] == float("inf") else f"{q['psnr_mean']:.2f} dB"
        quality = (f"**How close B is to A** over {q['frames']} frames: PSNR **{psnr}**, "
                   f"SSIM **{q['ssim_mean']:.4f}** (1.0 = identical).")
    else:
        quality = f"**How close:** {q['reason']}."
    sp = result["speedup"]
    quality += (f"\n\n**B against A:** {views.fmt_ratio(sp['tflops'])} fewer TFLOPs, "
                f"{views.fmt_ratio(sp['denoise'])} faster denoising, {views.fmt_ratio(sp['total'])} faster in total.")
    return videos, table, quality


def make_side_by_side(a, b):
    from ui import compare as cmp

    if not a or not b:
        raise PageError("pick two finished runs first")
    return cmp.side_by_side(int(a), int(b))


# ---------------------------------------------------------------------------- history
def history_rows(status, search, model) -> list[list[Any]]:
    page = _api().list_runs(status=status or None, search=search or None, model=model or None, limit=200)
    rows = []
    for r in page["items"]:
        rows.append([
            r["id"], views.still_html(r), r["status"], views.model_label(r), r["mode"], r["schedule"],
            views.size_label(r["frames"], r["height"], r["width"]), r["seed"],
            (r["created_at"] or "")[:19].replace("T", " "),
            "" if r.get("total_seconds") is None else f"{r['total_seconds']:.1f}",
            r["prompt"] if len(r["prompt"]) <= 60 else r["prompt"][:59] + "…",
        ])
    return rows or EMPTY_HISTORY


def open_run(run_id):
    api = _api()
    if not run_id:
        raise PageError("select a run in the table first")
    row = api.get_run(int(run_id))
    original = None
    if row.get("comparison_id"):
        group = api.get_comparison(row["comparison_id"])
        original = next((r for r in group["runs"] if r["mode"] == "original"), None)
    videos = views.videos_html([row], group=f"hist-{row['id']}") if row["status"] == "done" else views.progress_html(row)
    return videos, views.run_card(row, original)


def _client(request: gr.Request | None) -> str:
    """The admin lockout's client key: the peer, or X-Forwarded-For behind a trusted proxy."""
    try:
        peer = request.client.host if request is not None and request.client else None
        headers = request.headers if request is not None else None
        forwarded = headers.getlist("x-forwarded-for") if hasattr(headers, "getlist") else (
            headers.get("x-forwarded-for") if headers is not None else None)
    except AttributeError:
        peer, forwarded = None, None
    return client_key(peer, forwarded)


# ---------------------------------------------------------------------------- layout
HEADER = """
<div class="pw-header">
  <img src="/static/logo.svg" alt="" class="pw-logo" width="44" height="44">
  <div><h1>Pyramidal Wan studio</h1>
  <p>Text to video with Wan2.1 run as a pyramid: the noisy early steps at low resolution, the
  last ones at full size. Same model, same prompt and seed, a fraction of the compute &mdash;
  compare it with the original side by side.</p></div>
</div>
"""


def build_page() -> gr.Blocks:
    from core import list_presets

    with gr.Blocks(title="Pyramidal Wan studio", analytics_enabled=False) as page:
        gr.HTML(HEADER)
        banner = gr.Markdown(visible=False, elem_classes=["pw-banner"])
        admin_ok = gr.State(False)
        # {"<run id>": cancel token} of the runs this browser session submitted (server-side state)
        held_tokens = gr.State({})
        with gr.Tabs(selected="generate") as tabs:
            # ------------------------------------------------------------ Generate
            with gr.Tab("Generate", id="generate", elem_id="tab-generate"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=5, min_width=320):
                        prompt = gr.Textbox(label="Prompt", lines=3, max_lines=8, elem_id="prompt",
                                            placeholder="a red circle moves slowly to the right")
                        with gr.Row():
                            initial_models = _initial_models()
                            model = gr.Dropdown(label="Model", choices=initial_models, elem_id="model",
                                                value=_initial_model(initial_models),
                                                allow_custom_value=True,
                                                info="a preset, or a registered checkpoint")
                            mode = gr.Radio(["pyramidal", "original"], value="pyramidal", label="Mode",
                                            elem_id="mode")
                        with gr.Row():
                            schedule = gr.Dropdown(
                                choices=views.SCHEDULE_PRESETS, value=views.DEFAULT_SCHEDULE,
                                allow_custom_value=True, label="Schedule", elem_id="schedule",
                                info="steps per stage, lowest resolution first; type your own")
                            size = gr.Dropdown(choices=views.valid_sizes(views.DEFAULT_SCHEDULE),
                                               value=views.DEFAULT_SIZE, label="Frames x height x width",
                                               allow_custom_value=True,
                                               elem_id="size", info="only sizes this plan can run")
                        with gr.Accordion("More settings", open=False):
                            negative_prompt = gr.Textbox(label="Negative prompt", lines=1,
                                                         elem_id="negative-prompt")
                            with gr.Row():
                                guidance = gr.Textbox(value=model_guidance(_initial_model(initial_models)),
                                                      label="Guidance", elem_id="guidance",
                                                      info="one value, or one per stage: 7, 5, 3")
                                seed = gr.Number(value=0, precision=0, label="Seed", elem_id="seed",
                                                 minimum=0)
                                random_seed = gr.Checkbox(value=True, label="random seed",
                                                          elem_id="random-seed")
                        compare_box = gr.Checkbox(value=False, visible=False)
                        with gr.Row():
                            go = gr.Button("Generate", variant="primary", elem_id="generate-btn")
                            go_compare = gr.Button("Generate + compare with the original",
                                                   variant="secondary", elem_id="compare-btn")
                        message = gr.Markdown(elem_id="gen-message", elem_classes=["pw-message"])
                        submitted = gr.JSON(visible=False)
                    with gr.Column(scale=7, min_width=360):
                        progress = gr.HTML(elem_id="gen-progress",
                                           value='<div class="pw-empty">Your video appears here. '
                                                 'Type a prompt and press <b>Generate</b>.</div>')
                        preview = gr.HTML(elem_id="gen-preview")
                        videos = gr.HTML(elem_id="gen-videos")
                        card = gr.Markdown(elem_id="gen-card", elem_classes=["pw-card"])
                        with gr.Row():
                            open_compare = gr.Button("Open in Compare", visible=False, elem_id="open-compare")
                            gen_cancel = gr.Button("Cancel", visible=False, variant="stop", elem_id="gen-cancel")
                watch = gr.State({})
                timer = gr.Timer(POLL_SECONDS, active=False)

            # ------------------------------------------------------------ Compare
            with gr.Tab("Compare", id="compare", elem_id="tab-compare"):
                gr.Markdown("Pick any two finished runs. **A** is the reference (usually the original "
                            "model), **B** the one to judge; the videos play in step.")
                with gr.Row():
                    cmp_a = gr.Dropdown(label="A (reference)", choices=[], elem_id="cmp-a", allow_custom_value=True)
                    cmp_b = gr.Dropdown(label="B", choices=[], elem_id="cmp-b", allow_custom_value=True)
                with gr.Row():
                    cmp_go = gr.Button("Compare", variant="primary", elem_id="cmp-go")
                    cmp_refresh = gr.Button("Refresh the lists", elem_id="cmp-refresh")
                    cmp_sbs = gr.Button("Make side-by-side mp4", elem_id="cmp-sbs")
                cmp_videos = gr.HTML(elem_id="cmp-videos")
                with gr.Row(equal_height=False):
                    cmp_table = gr.Dataframe(headers=["", "A", "B", "A / B"], interactive=False,
                                             elem_id="cmp-table", wrap=True, scale=3)
                    with gr.Column(scale=2):
                        cmp_quality = gr.Markdown(elem_id="cmp-quality")
                        cmp_file = gr.File(label="Side-by-side mp4", elem_id="cmp-file", interactive=False)

            # ------------------------------------------------------------ History
            with gr.Tab("History", id="history", elem_id="tab-history"):
                with gr.Row():
                    h_status = gr.Dropdown(["queued", "running", "done", "failed", "cancelled"],
                                           multiselect=True, label="Status", elem_id="h-status")
                    h_model = gr.Dropdown(choices=[""] + list_presets(), value="", label="Model",
                                          elem_id="h-model")
                    h_search = gr.Textbox(label="Prompt contains", elem_id="h-search")
                    h_refresh = gr.Button("Refresh", elem_id="h-refresh", scale=0)
                h_table = gr.Dataframe(headers=HISTORY_HEADERS, value=EMPTY_HISTORY, interactive=False,
                                       datatype=HISTORY_TYPES, elem_id="h-table", wrap=True, max_height=420)
                with gr.Row():
                    h_id = gr.Number(label="Selected run", value=None, precision=0, elem_id="h-id", minimum=1)
                    h_open = gr.Button("Open", elem_id="h-open")
                    h_rerun = gr.Button("Run again", elem_id="h-rerun")
                    h_cancel = gr.Button("Cancel", elem_id="h-cancel")
                    h_as_a = gr.Button("Compare as A", elem_id="h-as-a")
                    h_as_b = gr.Button("Compare as B", elem_id="h-as-b")
                    h_delete = gr.Button("Delete (admin)", variant="stop", elem_id="h-delete")
                h_message = gr.Markdown(elem_id="h-message", elem_classes=["pw-message"])
                h_videos = gr.HTML(elem_id="h-videos")
                h_card = gr.Markdown(elem_id="h-card", elem_classes=["pw-card"])

            # ------------------------------------------------------------ Admin
            with gr.Tab("Admin", id="admin", elem_id="tab-admin"):
                enabled = admin_password() is not None
                gr.Markdown(
                    "Finetune jobs and checkpoints. Enter the admin password to unlock."
                    if enabled else
                    "**Admin features are off on this server.** Start it with "
                    "`PWAN_ADMIN_PASSWORD=...` to manage finetune jobs and checkpoints.")
                with gr.Row(visible=enabled):
                    password = gr.Textbox(label="Admin password", type="password", elem_id="admin-password")
                    unlock = gr.Button("Unlock", variant="primary", elem_id="admin-unlock", scale=0)
                admin_message = gr.Markdown(elem_id="admin-message", elem_classes=["pw-message"])
                with gr.Column(visible=False, elem_id="admin-panel") as panel:
                    gr.Markdown("### Finetune jobs")
                    has_submit = hasattr(_api(), "submit_job")
                    with gr.Accordion("Start a finetune job", open=False, visible=has_submit):
                        with gr.Row():
                            j_name = gr.Textbox(label="Checkpoint name", elem_id="job-name")
                            j_base = gr.Dropdown(list_presets(), label="Base model", elem_id="job-base")
                        j_config = gr.Code(value=DEFAULT_JOB_CONFIG, language="json", elem_id="job-config",
                                           label="Training settings (JSON: steps, data, schedule, lr, lora_rank, ...)")
                        j_start = gr.Button("Start", variant="primary", elem_id="job-start")
                    if not has_submit:
                        gr.Markdown("*Starting jobs arrives with the finetune feature; jobs already "
                                    "queued are listed here.*")
                    j_table = gr.Dataframe(headers=["id", "name", "base", "status", "step", "progress", "loss", "created (UTC)"],
                                           interactive=False, elem_id="jobs-table")
                    with gr.Row():
                        j_id = gr.Number(label="Job", value=None, precision=0, minimum=1, elem_id="job-id")
                        j_follow = gr.Button("Follow", elem_id="job-follow")
                        j_cancel = gr.Button("Cancel job", variant="stop", elem_id="job-cancel")
                        j_refresh = gr.Button("Refresh", elem_id="job-refresh")
                    j_detail = gr.Markdown(elem_id="job-detail")
                    j_plot = gr.LinePlot(x="step", y="loss", title="Loss", elem_id="job-loss", height=260,
                                         visible=False)
                    j_timer = gr.Timer(2.0, active=False)
                    gr.Markdown("### Checkpoints")
                    c_table = gr.Dataframe(headers=["id", "name", "kind", "base", "path", "created (UTC)"],
                                           interactive=False, elem_id="ckpt-table")
                    with gr.Row():
                        c_id = gr.Number(label="Checkpoint", value=None, precision=0, minimum=1, elem_id="ckpt-id")
                        c_name = gr.Textbox(label="New name", elem_id="ckpt-name")
                        c_rename = gr.Button("Rename", elem_id="ckpt-rename")
                        c_delete = gr.Button("Delete", variant="stop", elem_id="ckpt-delete")
                    with gr.Accordion("Register a checkpoint folder", open=False):
                        with gr.Row():
                            c_path = gr.Textbox(label="Folder on the server", elem_id="ckpt-path")
                            c_base = gr.Dropdown(list_presets(), label="Base model", elem_id="ckpt-base")
                            c_new = gr.Textbox(label="Name", elem_id="ckpt-new-name")
                        c_register = gr.Button("Register", elem_id="ckpt-register")
                    c_message = gr.Markdown(elem_classes=["pw-message"])

        # ================================================================ events
        # ---- page load: choices, a banner if something is wrong, ?comparison= / ?run=
        def on_load(model_value, request: gr.Request):
            """Fresh model choices, the banner, and a ``?comparison=``/``?run=`` link's tab. The model
            and guidance boxes change only when the default differs from the value the page was
            built with (``model_value``, sent when the page mounted): a user typing into them while
            the load is in flight keeps what they typed."""
            from core import default_preset

            banner_text, choices, default = "", [], None
            try:
                choices = model_choices()
                default = default_preset()
                if default not in [v for _, v in choices]:
                    banner_text = (f"⚠ The default model **{default}** (PWAN_MODEL) is not a known preset; "
                                   f"choose one of the models listed.")
                    default = choices[0][1] if choices else None
                else:
                    default = _shipped_pyramidal(default, [v for _, v in choices])
            except Exception as exc:  # noqa: BLE001
                log.exception("page load failed")
                banner_text = (f"⚠ The run database cannot be reached ({type(exc).__name__}: {exc}). "
                               "Check PWAN_DATABASE_URL and reload the page.")
            runs = []
            try:
                runs = done_run_choices()
            except Exception:  # noqa: BLE001 - reported by the banner above
                pass
            params = dict(request.query_params) if request is not None else {}
            tab, a, b = gr.skip(), gr.update(choices=runs), gr.update(choices=runs)
            hist_id = gr.skip()
            if params.get("comparison", "").isdigit():
                try:
                    group = _api().get_comparison(int(params["comparison"]))
                    ids = [r["id"] for r in group["runs"]]
                    if len(ids) >= 2:
                        tab = gr.Tabs(selected="compare")
                        a, b = gr.update(choices=runs, value=ids[0]), gr.update(choices=runs, value=ids[1])
                except Exception:  # noqa: BLE001
                    banner_text = f"There is no comparison {params['comparison']}."
            elif params.get("run", "").isdigit():
                tab, hist_id = gr.Tabs(selected="history"), int(params["run"])
            if default is None or default == model_value:
                model_out, guidance_out = gr.update(choices=choices), gr.skip()
            else:
                model_out, guidance_out = gr.update(choices=choices, value=default), model_guidance(default)
            return (gr.update(value=banner_text, visible=bool(banner_text)),
                    model_out, a, b, tab, hist_id, guidance_out)

        # the body's data-pw-loaded tells scripts (and the browser tests) that the load has landed
        page.load(on_load, [model], [banner, model, cmp_a, cmp_b, tabs, h_id, guidance], api_name=False
                  ).then(None, None, None, js="() => { document.body.dataset.pwLoaded = '1'; }")

        # ---- plan-aware inputs
        def on_schedule(schedule_value, size_value):
            sizes = views.valid_sizes(schedule_value or "")
            if not sizes:
                return gr.update(), gr.update(value="⚠ " + _schedule_error(schedule_value), visible=True)
            value = size_value if size_value in sizes else (
                views.DEFAULT_SIZE if views.DEFAULT_SIZE in sizes else sizes[0])
            return gr.update(choices=sizes, value=value), gr.update(value="", visible=False)

        schedule.change(on_schedule, [schedule, size], [size, message], api_name=False, queue=False)

        def on_mode(mode_value, schedule_value):
            if mode_value == "original":
                return gr.update(value=views.baseline_of(schedule_value or views.DEFAULT_SCHEDULE))
            if schedule_value and schedule_value.split("-")[:-1] and all(p.strip() == "0" for p in schedule_value.split("-")[:-1]):
                return gr.update(value=views.DEFAULT_SCHEDULE)
            return gr.update()

        mode.input(on_mode, [mode, schedule], [schedule], api_name=False, queue=False)
        def on_model(model_value, schedule_value):
            choices = schedule_choices(model_value)
            recommended = choices[0] if choices[0] not in views.SCHEDULE_PRESETS else None
            return gr.update(choices=choices, value=recommended or schedule_value), model_guidance(model_value)

        model.input(friendly(on_model), [model, schedule], [schedule, guidance], api_name=False)

        # ---- generate
        gen_inputs = [prompt, negative_prompt, model, mode, schedule, guidance, seed, random_seed, size, compare_box,
                      held_tokens]

        def on_generate(prompt, negative_prompt, model, mode, schedule, guidance, seed, random_seed, size,
                        compare, held):
            try:
                result = friendly(submit)(prompt, negative_prompt, model, mode, schedule, guidance, seed,
                                          random_seed, size, compare)
            except gr.Error as exc:
                gr.Warning(exc.message)
                return (f"⚠ {exc.message}", None, gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(),
                        gr.skip(), gr.skip(), gr.update(visible=False), gr.skip())
            held = {**(held or {}), **result.pop("cancel_tokens")}
            what = (f"Queued the original (run #{result['run_ids'][0]}) and the pyramid "
                    f"(run #{result['run_ids'][1]}), seed {result['seed']}."
                    if result["comparison_id"] else f"Queued run #{result['run_ids'][0]}, seed {result['seed']}.")
            watch_state = dict(result, last={})
            return (what, result, watch_state, gr.Timer(active=True), "", "", "", "",
                    gr.update(value=result["seed"]), gr.update(visible=False), held)

        gen_outputs = [message, submitted, watch, timer, progress, preview, videos, card, seed, open_compare,
                       held_tokens]
        tick_outputs = [progress, preview, videos, card, watch, timer, open_compare, gen_cancel]
        go.click(on_generate, gen_inputs, gen_outputs, api_name="generate",
                 api_description="Queue a run (compare=True: the original and the pyramid, same seed)."
                 ).then(_first_poll, [watch], tick_outputs, api_name=False)
        go_compare.click(lambda: True, None, compare_box, api_name=False, queue=False).then(
            on_generate, gen_inputs, gen_outputs, api_name=False).then(
            lambda: False, None, compare_box, api_name=False, queue=False).then(
            _first_poll, [watch], tick_outputs, api_name=False)
        prompt.submit(on_generate, gen_inputs, gen_outputs, api_name=False).then(
            _first_poll, [watch], tick_outputs, api_name=False)

        timer.tick(_first_poll, [watch], tick_outputs, api_name=False, show_progress="hidden")

        @friendly
        def cancel_current(watch_state, held, is_admin):
            ids = (watch_state or {}).get("run_ids") or []
            states = [cancel_with_session(run_id, held, is_admin)["status"] for run_id in ids]
            return f"Cancelling run{'s' if len(ids) > 1 else ''} {', '.join(f'#{i}' for i in ids)} ({', '.join(states)})."

        gen_cancel.click(cancel_current, [watch, held_tokens, admin_ok], [message], api_name=False)

        def to_compare(watch_state):
            ids = (watch_state or {}).get("run_ids") or []
            runs = done_run_choices()
            if len(ids) < 2:
                return gr.skip(), gr.update(choices=runs), gr.update(choices=runs)
            return (gr.Tabs(selected="compare"), gr.update(choices=runs, value=ids[0]),
                    gr.update(choices=runs, value=ids[1]))

        open_compare.click(to_compare, [watch], [tabs, cmp_a, cmp_b], api_name=False).then(
            friendly(compare), [cmp_a, cmp_b], [cmp_videos, cmp_table, cmp_quality], api_name=False)

        # ---- compare
        cmp_go.click(friendly(compare), [cmp_a, cmp_b], [cmp_videos, cmp_table, cmp_quality], api_name="compare")
        cmp_sbs.click(friendly(make_side_by_side), [cmp_a, cmp_b], [cmp_file], api_name="side_by_side")

        def refresh_lists():
            runs = done_run_choices()
            return gr.update(choices=runs), gr.update(choices=runs)

        cmp_refresh.click(friendly(refresh_lists), None, [cmp_a, cmp_b], api_name=False)

        # ---- history
        h_filters = [h_status, h_search, h_model]
        h_refresh.click(friendly(history_rows), h_filters, [h_table], api_name="history")
        h_search.submit(friendly(history_rows), h_filters, [h_table], api_name=False)
        h_status.change(friendly(history_rows), h_filters, [h_table], api_name=False)
        h_model.change(friendly(history_rows), h_filters, [h_table], api_name=False)

        def on_select(evt: gr.SelectData):
            value = (evt.row_value or [None])[0]
            return int(value) if str(value).isdigit() else gr.skip()

        h_table.select(on_select, None, [h_id], api_name=False)
        h_open.click(friendly(open_run), [h_id], [h_videos, h_card], api_name=False)

        def soft(fn, outputs=2):
            """History actions: a refused action is a message, the table (and the rest) stays as it is."""
            checked = friendly(fn)

            def wrapper(*args):
                try:
                    return checked(*args)
                except gr.Error as exc:
                    return (f"⚠ {exc.message}",) + (gr.skip(),) * (outputs - 1)

            wrapper.__name__ = fn.__name__
            return wrapper

        def do_rerun(run_id, held, *filters):
            if not run_id:
                raise PageError("select a run in the table first")
            row = _api().rerun(int(run_id))
            held = {**(held or {}), str(row["id"]): row["cancel_token"]}
            return (f"Queued run #{row['id']} with the settings (and seed) of run #{int(run_id)}.",
                    history_rows(*filters), held)

        do_rerun = soft(do_rerun, outputs=3)

        @soft
        def do_cancel(run_id, held, is_admin, *filters):
            if not run_id:
                raise PageError("select a run in the table first")
            row = cancel_with_session(int(run_id), held, is_admin)
            what = ("cancelled" if row["status"] == "cancelled" else
                    "will stop at its next step" if row["status"] == "running" else f"was already {row['status']}")
            return f"Run #{row['id']} {what}.", history_rows(*filters)

        @soft
        def do_delete(run_id, is_admin, *filters):
            if not is_admin:
                raise PageError("deleting runs needs the admin password (unlock it in the Admin tab)")
            if not run_id:
                raise PageError("select a run in the table first")
            row = _api().delete_run(int(run_id))
            return f"Deleted run #{row['id']}.", history_rows(*filters)

        h_rerun.click(do_rerun, [h_id, held_tokens] + h_filters, [h_message, h_table, held_tokens], api_name=False)
        h_cancel.click(do_cancel, [h_id, held_tokens, admin_ok] + h_filters, [h_message, h_table], api_name=False)
        h_delete.click(do_delete, [h_id, admin_ok] + h_filters, [h_message, h_table], api_name=False)

        def as_side(run_id):
            runs = done_run_choices()
            if not run_id:
                raise PageError("select a run in the table first")
            if int(run_id) not in [v for _, v in runs]:
                raise PageError(f"run #{int(run_id)} is not finished: only finished runs can be compared")
            return gr.Tabs(selected="compare"), gr.update(choices=runs, value=int(run_id))

        h_as_a.click(friendly(as_side), [h_id], [tabs, cmp_a], api_name=False)
        h_as_b.click(friendly(as_side), [h_id], [tabs, cmp_b], api_name=False)

        # ---- admin
        def jobs_rows():
            items = _api().list_jobs(limit=200)["items"]
            rows = [[j["id"], j["name"], j["base"], j["status"], f"{j.get('step') or 0}/{j.get('steps') or '?'}",
                     f"{(j.get('fraction') or 0):.0%}",
                     f"{j['losses'][-1]['loss']:.4g}" if j.get("losses") and isinstance(j["losses"][-1], dict)
                     and "loss" in j["losses"][-1] else "",
                     (j["created_at"] or "")[:19].replace("T", " ")] for j in items]
            return rows or [["", "", "", "", "", "", "", ""]]

        def ckpt_rows():
            rows = [[c["id"], c["name"], c["kind"], c["base"], c["path"], (c["created_at"] or "")[:19].replace("T", " ")]
                    for c in _api().list_checkpoints() if not c["builtin"]]
            return rows or [["", "", "", "", "", ""]]

        def on_unlock(pw, request: gr.Request):
            verdict = guard.check(pw, _client(request))
            if not verdict.ok:
                return (f"⚠ {verdict.message}", False, gr.update(visible=False), gr.skip(), gr.skip(), "")
            return ("✓ " + verdict.message, True, gr.update(visible=True), jobs_rows(), ckpt_rows(), "")

        unlock.click(on_unlock, [password], [admin_message, admin_ok, panel, j_table, c_table, password],
                     api_name=False)
        password.submit(on_unlock, [password], [admin_message, admin_ok, panel, j_table, c_table, password],
                        api_name=False)

        def admin_only(fn):
            def wrapper(is_admin, *args):
                if not is_admin:
                    raise PageError("unlock the admin tab with the password first")
                return fn(*args)

            wrapper.__name__ = getattr(fn, "__name__", "admin_action")
            return friendly(wrapper)

        def follow_job(job_id):
            import pandas as pd

            if not job_id:
                raise PageError("enter a job id")
            job = _api().get_job(int(job_id))
            points = [p for p in job.get("losses") or [] if isinstance(p, dict) and "step" in p and "loss" in p]
            detail = (f"**Job #{job['id']}** `{job['name']}` over `{job['base']}` · {views.status_badge(job['status'])} · "
                      f"step {job.get('step') or 0}/{job.get('steps') or '?'} ({(job.get('fraction') or 0):.0%})")
            if job.get("error"):
                detail += f"\n\n**Error:** {job['error']}"
            config = job.get("config") or {}
            shown = [f"{k} `{config[k]}`" for k in JOB_SUMMARY_KEYS if config.get(k) not in (None, "")]
            if shown:
                detail += "\n\n" + " · ".join(shown)
            if job.get("checkpoint_id"):
                detail += f"\n\nRegistered as checkpoint #{job['checkpoint_id']}: pick it as the model in Generate."
            frame = pd.DataFrame(points or [], columns=["step", "loss"])
            following = job["status"] not in views.FINAL
            return detail, gr.update(value=frame, visible=True), gr.Timer(active=following)

        def cancel_job(job_id):
            if not job_id:
                raise PageError("enter a job id")
            job = _api().cancel_job(int(job_id))
            return f"Job #{job['id']} is {job['status']}" + (" (stopping)" if job.get("cancel_requested") and job["status"] == "running" else "") + ".", jobs_rows()

        def start_job(name, base, config_text):
            try:
                config = json.loads(config_text or "{}")
            except json.JSONDecodeError as exc:
                raise PageError(f"the training config is not valid JSON: {exc}") from None
            job = _api().submit_job(name=name, base=base, config=config)
            return f"Queued job #{job['id']}.", jobs_rows()

        def rename_ckpt(cid, name):
            if not cid:
                raise PageError("enter a checkpoint id")
            row = _api().rename_checkpoint(int(cid), name)
            return f"Checkpoint #{row['id']} is now `{row['name']}`.", ckpt_rows(), gr.update(choices=model_choices())

        def delete_ckpt(cid):
            if not cid:
                raise PageError("enter a checkpoint id")
            row = _api().delete_checkpoint(int(cid))
            return (f"Unregistered checkpoint `{row['name']}` (its folder stays on disk).", ckpt_rows(),
                    gr.update(choices=model_choices()))

        def register_ckpt(path, base, name):
            row = _api().register_checkpoint(path, base, name, roots=_api().allowed_roots())
            return f"Registered `{row['name']}` over `{row['base']}`.", ckpt_rows(), gr.update(choices=model_choices())

        j_refresh.click(admin_only(lambda: (jobs_rows(), ckpt_rows())), [admin_ok], [j_table, c_table], api_name=False)
        j_follow.click(admin_only(follow_job), [admin_ok, j_id], [j_detail, j_plot, j_timer], api_name=False)
        j_timer.tick(admin_only(follow_job), [admin_ok, j_id], [j_detail, j_plot, j_timer], api_name=False,
                     show_progress="hidden")
        j_cancel.click(admin_only(cancel_job), [admin_ok, j_id], [j_detail, j_table], api_name=False)
        j_start.click(admin_only(start_job), [admin_ok, j_name, j_base, j_config], [j_detail, j_table], api_name=False)
        c_rename.click(admin_only(rename_ckpt), [admin_ok, c_id, c_name], [c_message, c_table, model], api_name=False)
        c_delete.click(admin_only(delete_ckpt), [admin_ok, c_id], [c_message, c_table, model], api_name=False)
        c_register.click(admin_only(register_ckpt), [admin_ok, c_path, c_base, c_new], [c_message, c_table, model],
                         api_name=False)
    _wire_tab_refresh(page, tabs, cmp_a, cmp_b, h_table, h_filters)
    return page


def _initial_models() -> list[tuple[str, str]]:
    """The model choices when the page is built (each visit reloads them)."""
    try:
        return model_choices()
    except Exception:  # noqa: BLE001 - the load event shows why in a banner
        from core import list_presets

        return [(f"{p} (preset)", p) for p in list_presets()]


def _initial_model(choices: list[tuple[str, str]]) -> str | None:
    from core import default_preset

    values = [v for _, v in choices]
    default = default_preset()
    return _shipped_pyramidal(default, values) if default in values else (values[0] if values else None)


def _shipped_pyramidal(preset: str, values: list[str]) -> str:
    """``preset``, or its pyramidal finetune shipped beside it (``models/<preset>-pyramidal``,
    registered at start-up) when there is one: the page's default mode is pyramidal, and a
    pyramidal plan is meant for the finetuned model."""
    try:
        row = _api().shipped_pyramidal(preset)
    except Exception:  # noqa: BLE001 - the plain preset is a fine default
        row = None
    value = f"{CHECKPOINT_PREFIX}{row['id']}" if row else None
    return value if value in values else preset


def _first_poll(watch_state):
    """One poll of the Generate tab, plus whether "Open in Compare" and "Cancel" show."""
    out = follow(watch_state)
    new_watch, timer = out[4], out[5]
    following = isinstance(timer, gr.Timer) and timer.active
    is_comparison = isinstance(new_watch, dict) and bool(new_watch.get("comparison_id"))
    return out + (gr.update(visible=is_comparison and not following), gr.update(visible=following))


def _schedule_error(schedule_value) -> str:
    from core import RequestError

    try:
        views.plan_for(schedule_value or "")
    except RequestError as exc:
        return str(exc)
    return f"schedule {schedule_value!r} allows no size"


def _wire_tab_refresh(page, tabs, cmp_a, cmp_b, h_table, h_filters) -> None:
    """Selecting Compare or History reloads its lists."""

    def on_select(evt: gr.SelectData, a, b, *filters):
        target = getattr(evt, "value", None)
        if target == "Compare":
            runs = done_run_choices()
            return gr.update(choices=runs, value=a), gr.update(choices=runs, value=b), gr.skip()
        if target == "History":
            return gr.skip(), gr.skip(), history_rows(*filters)
        return gr.skip(), gr.skip(), gr.skip()

    with page:
        tabs.select(friendly(on_select), [cmp_a, cmp_b] + h_filters, [cmp_a, cmp_b, h_table], api_name=False)
