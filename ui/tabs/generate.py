"""The Generate tab: a prompt and plan-aware settings in, progress, a preview and the video out.

A submit queues one run (or the original and the pyramid on the same prompt and seed); a
``gr.Timer`` then polls the rows every :data:`POLL_SECONDS` until they are final.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

import service
from ui import views
from ui.tabs.common import (PageError, Shared, cancel_with_session, friendly, initial_model, initial_models,
                            model_guidance, model_lock, schedule_choices, split_model)

POLL_SECONDS = 0.5
EMPTY = '<div class="pw-empty">Your video appears here. Type a prompt and press <b>Generate</b>.</div>'


def submit(prompt, negative_prompt, model, mode, schedule, guidance, seed, random_seed, size, compare,
           fast_decode=False):
    """Validate and queue a run (or, with ``compare``, the original and the pyramid on the
    same prompt and seed); ``fast_decode`` decodes with the tiny decoder. Returns ``{"run_ids":
    [...], "comparison_id": ..., "seed": ..., "cancel_tokens": {"<run id>": token}}`` (the tokens
    stay in the browser session's state)."""
    model_name, checkpoint = split_model(model)
    frames, height, width = views.parse_size(size or views.DEFAULT_SIZE)
    # the box still showing the model's recommendation (or emptied) names no guidance: the server
    # applies the recommendation to the plan that runs (a per-stage one would not fit every plan)
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
                  guidance=guidance_value, seed=seed_value, frames=frames, height=height, width=width,
                  decoder="tiny" if fast_decode else "full")
    if compare:
        group = service.submit_comparison(prompt, schedule=schedule or None, **common)
        return {"run_ids": [r["id"] for r in group["runs"]], "comparison_id": group["id"],
                "seed": group["seed"],
                "cancel_tokens": {str(r["id"]): r["cancel_token"] for r in group["runs"]}}
    row = service.submit_run(prompt, mode=mode or "pyramidal", schedule=schedule or None, **common)
    return {"run_ids": [row["id"]], "comparison_id": None, "seed": row["seed"],
            "cancel_tokens": {str(row["id"]): row["cancel_token"]}}


def _schedule_error(schedule_value) -> str:
    from core import RequestError

    try:
        views.plan_for(schedule_value or "")
    except RequestError as exc:
        return str(exc)
    return f"schedule {schedule_value!r} allows no size"


def _with_preview(rows: list[dict]) -> set[int]:
    """Ids of the pyramidal runs whose low-resolution preview has been written."""
    return {r["id"] for r in rows if r["mode"] == "pyramidal" and r["status"] in ("running", "done")
            and (r.get("preview_path") or service.preview_path(r["id"]).is_file())}


def _layout() -> dict[str, Any]:
    """The tab's components, by the names of :class:`GenerateTab`'s fields."""
    c: dict[str, Any] = {}
    with gr.Row(equal_height=False):
        with gr.Column(scale=5, min_width=320):
            c["prompt"] = gr.Textbox(label="Prompt", lines=3, max_lines=8, elem_id="prompt",
                                     placeholder="a red circle moves slowly to the right")
            with gr.Row():
                models = initial_models()
                c["model"] = gr.Dropdown(label="Model", choices=models, elem_id="model",
                                         value=initial_model(models), allow_custom_value=True,
                                         info="a preset, or a registered checkpoint")
                c["mode"] = gr.Radio(["pyramidal", "original"], value="pyramidal", label="Mode", elem_id="mode")
            with gr.Row():
                c["schedule"] = gr.Dropdown(
                    choices=views.SCHEDULE_PRESETS, value=views.DEFAULT_SCHEDULE, allow_custom_value=True,
                    label="Schedule", elem_id="schedule",
                    info="steps per stage, lowest resolution first; type your own")
                c["size"] = gr.Dropdown(choices=views.valid_sizes(views.DEFAULT_SCHEDULE), value=views.DEFAULT_SIZE,
                                        label="Frames x height x width", allow_custom_value=True,
                                        elem_id="size", info="only sizes this plan can run")
            c["lock_note"] = gr.Markdown(visible=False, elem_id="recipe-lock", elem_classes=["pw-message"])
            with gr.Accordion("More settings", open=False):
                c["negative_prompt"] = gr.Textbox(label="Negative prompt", lines=1, elem_id="negative-prompt")
                with gr.Row():
                    c["guidance"] = gr.Textbox(value=model_guidance(initial_model(models)), label="Guidance",
                                               elem_id="guidance", info="one value, or one per stage: 7, 5, 3")
                    c["seed"] = gr.Number(value=0, precision=0, label="Seed", elem_id="seed", minimum=0)
                    c["random_seed"] = gr.Checkbox(value=True, label="random seed", elem_id="random-seed")
            c["fast_decode"] = gr.Checkbox(value=False, label="Fast decode", elem_id="fast-decode",
                                           info="the tiny decoder: ~10x faster decode, slightly softer video")
            c["compare_box"] = gr.Checkbox(value=False, visible=False)
            with gr.Row():
                c["go"] = gr.Button("Generate", variant="primary", elem_id="generate-btn")
                c["go_compare"] = gr.Button("Generate + compare with the original", variant="secondary",
                                            elem_id="compare-btn")
            c["message"] = gr.Markdown(elem_id="gen-message", elem_classes=["pw-message"])
            c["submitted"] = gr.JSON(visible=False)
        with gr.Column(scale=7, min_width=360):
            c["progress"] = gr.HTML(elem_id="gen-progress", value=EMPTY)
            c["preview"] = gr.HTML(elem_id="gen-preview")
            c["videos"] = gr.HTML(elem_id="gen-videos")
            c["card"] = gr.Markdown(elem_id="gen-card", elem_classes=["pw-card"])
            with gr.Row():
                c["open_compare"] = gr.Button("Open in Compare", visible=False, elem_id="open-compare")
                c["cancel"] = gr.Button("Cancel", visible=False, variant="stop", elem_id="gen-cancel")
    c["watch"] = gr.State({})  # the runs followed: run_ids, comparison_id, seed, last (what is shown)
    c["timer"] = gr.Timer(POLL_SECONDS, active=False)
    return c


@dataclass(eq=False)
class GenerateTab:
    """The Generate tab's components and its event handlers (each returns ``{component: value}``)."""

    shared: Shared
    prompt: gr.Textbox
    model: gr.Dropdown
    mode: gr.Radio
    schedule: gr.Dropdown
    size: gr.Dropdown
    lock_note: gr.Markdown
    negative_prompt: gr.Textbox
    guidance: gr.Textbox
    seed: gr.Number
    random_seed: gr.Checkbox
    fast_decode: gr.Checkbox
    compare_box: gr.Checkbox
    go: gr.Button
    go_compare: gr.Button
    message: gr.Markdown
    submitted: gr.JSON
    progress: gr.HTML
    preview: gr.HTML
    videos: gr.HTML
    card: gr.Markdown
    open_compare: gr.Button
    cancel: gr.Button
    watch: gr.State
    timer: gr.Timer

    # ------------------------------------------------------------ plan-aware inputs
    def on_schedule(self, schedule_value, size_value):
        """Offer only the sizes the typed plan can run, or say why it runs none."""
        sizes = views.valid_sizes(schedule_value or "")
        if not sizes:
            return {self.size: gr.update(),
                    self.message: gr.update(value="⚠ " + _schedule_error(schedule_value), visible=True)}
        value = size_value if size_value in sizes else (views.DEFAULT_SIZE if views.DEFAULT_SIZE in sizes else sizes[0])
        # the warning goes; the box stays visible (empty, as at first) for the next message: a hidden box
        # would keep hiding "Queued run #..." after any valid schedule
        return {self.size: gr.update(choices=sizes, value=value), self.message: gr.update(value="", visible=True)}

    def on_mode(self, mode_value, schedule_value):
        """The original runs one stage: switching modes swaps the plan for its counterpart."""
        if mode_value == "original":
            return {self.schedule: gr.update(value=views.baseline_of(schedule_value or views.DEFAULT_SCHEDULE))}
        lower = (schedule_value or "").split("-")[:-1]
        if schedule_value and lower and all(p.strip() == "0" for p in lower):
            return {self.schedule: gr.update(value=views.DEFAULT_SCHEDULE)}
        return {self.schedule: gr.update()}

    def on_model(self, model_value, schedule_value):
        """A model's recommended schedules come first (and its first is selected) and its guidance
        shows. A distilled checkpoint runs only its recipe: its schedule, guidance 1 and the
        pyramidal mode are set and locked, with a note saying why; another model unlocks them."""
        lock = model_lock(model_value)
        if lock is not None:
            return {self.schedule: gr.update(choices=[lock["schedule"]], value=lock["schedule"], interactive=False),
                    self.guidance: gr.update(value=lock["guidance"], interactive=False),
                    self.mode: gr.update(value=lock["mode"], interactive=False),
                    self.lock_note: gr.update(value=lock["note"], visible=True)}
        choices = schedule_choices(model_value)
        recommended = choices[0] if choices[0] not in views.SCHEDULE_PRESETS else None
        return {self.schedule: gr.update(choices=choices, value=recommended or schedule_value, interactive=True),
                self.guidance: gr.update(value=model_guidance(model_value), interactive=True),
                self.mode: gr.update(interactive=True), self.lock_note: gr.update(value="", visible=False)}

    # ------------------------------------------------------------ submit and follow
    def on_generate(self, prompt, negative_prompt, model, mode, schedule, guidance, seed, random_seed, size,
                    compare, held, fast_decode=False):
        """Queue the run(s), keep their cancel tokens in the session, and start following them."""
        try:
            result = friendly(submit)(prompt, negative_prompt, model, mode, schedule, guidance, seed,
                                      random_seed, size, compare, fast_decode)
        except gr.Error as exc:
            gr.Warning(exc.message)
            return {self.message: f"⚠ {exc.message}", self.submitted: None,
                    self.open_compare: gr.update(visible=False)}
        held = {**(held or {}), **result.pop("cancel_tokens")}
        ids = result["run_ids"]
        what = (f"Queued the original (run #{ids[0]}) and the pyramid (run #{ids[1]}), seed {result['seed']}."
                if result["comparison_id"] else f"Queued run #{ids[0]}, seed {result['seed']}.")
        return {self.message: what, self.submitted: result, self.watch: dict(result, last={}),
                self.timer: gr.Timer(active=True), self.progress: "", self.preview: "", self.videos: "",
                self.card: "", self.seed: gr.update(value=result["seed"]),
                self.open_compare: gr.update(visible=False), self.shared.held_tokens: held}

    def poll(self, watch_state):
        """One poll of the followed runs: progress cards, the preview once it exists, the videos and
        card at the end (unchanged parts are skipped); "Open in Compare" and "Cancel" when they apply."""
        watch = dict(watch_state or {})
        ids = watch.get("run_ids") or []
        comparison = bool(watch.get("comparison_id"))
        if not ids:
            return {self.timer: gr.Timer(active=False), self.open_compare: gr.update(visible=False),
                    self.cancel: gr.update(visible=False)}
        rows = []
        for run_id in ids:
            try:
                rows.append(service.get_run(run_id))
            except service.NotFoundError:
                continue
        if not rows:
            return {self.progress: "<p>This run was deleted.</p>", self.preview: "", self.videos: "",
                    self.card: "", self.watch: watch, self.timer: gr.Timer(active=False),
                    self.open_compare: gr.update(visible=comparison), self.cancel: gr.update(visible=False)}
        view = views.watch_view(rows, comparison, _with_preview(rows), group=f"gen-{ids[0]}")
        finished = view.pop("finished")
        last = watch.get("last") or {}
        shown = {getattr(self, key): gr.skip() if last.get(key) == value else value for key, value in view.items()}
        watch["last"] = view
        return {**shown, self.watch: watch, self.timer: gr.Timer(active=not finished),
                self.open_compare: gr.update(visible=comparison and finished),
                self.cancel: gr.update(visible=not finished)}

    def cancel_current(self, watch_state, held, is_admin):
        """Cancel the followed run(s) with this session's tokens (or as the admin)."""
        ids = (watch_state or {}).get("run_ids") or []
        states = [cancel_with_session(run_id, held, is_admin)["status"] for run_id in ids]
        runs = ", ".join(f"#{i}" for i in ids)
        return {self.message: f"Cancelling run{'s' if len(ids) > 1 else ''} {runs} ({', '.join(states)})."}

    # ------------------------------------------------------------ events
    @property
    def poll_outputs(self) -> list:
        return [self.progress, self.preview, self.videos, self.card, self.watch, self.timer, self.open_compare,
                self.cancel]

    def wire(self) -> None:
        """Attach the tab's events (call inside the page's Blocks)."""
        self.schedule.change(self.on_schedule, [self.schedule, self.size], [self.size, self.message],
                             api_name=False, queue=False)
        self.mode.input(self.on_mode, [self.mode, self.schedule], [self.schedule], api_name=False, queue=False)
        self.model.input(friendly(self.on_model), [self.model, self.schedule],
                         [self.schedule, self.guidance, self.mode, self.lock_note], api_name=False)
        inputs = [self.prompt, self.negative_prompt, self.model, self.mode, self.schedule, self.guidance,
                  self.seed, self.random_seed, self.size, self.compare_box, self.shared.held_tokens,
                  self.fast_decode]
        outputs = [self.message, self.submitted, self.watch, self.timer, self.progress, self.preview, self.videos,
                   self.card, self.seed, self.open_compare, self.shared.held_tokens]
        self.go.click(self.on_generate, inputs, outputs, api_name="generate",
                      api_description="Queue a run (compare=True: the original and the pyramid, same seed)."
                      ).then(self.poll, [self.watch], self.poll_outputs, api_name=False)
        self.go_compare.click(lambda: True, None, self.compare_box, api_name=False, queue=False).then(
            self.on_generate, inputs, outputs, api_name=False).then(
            lambda: False, None, self.compare_box, api_name=False, queue=False).then(
            self.poll, [self.watch], self.poll_outputs, api_name=False)
        self.prompt.submit(self.on_generate, inputs, outputs, api_name=False).then(
            self.poll, [self.watch], self.poll_outputs, api_name=False)
        self.timer.tick(self.poll, [self.watch], self.poll_outputs, api_name=False, show_progress="hidden")
        self.cancel.click(friendly(self.cancel_current),
                          [self.watch, self.shared.held_tokens, self.shared.admin_ok], [self.message],
                          api_name=False)


def build(shared: Shared) -> GenerateTab:
    """Lay out the Generate tab (call inside the page's ``gr.Tabs``); wire it with :meth:`GenerateTab.wire`."""
    with gr.Tab("Generate", id="generate", elem_id="tab-generate"):
        parts = _layout()
    return GenerateTab(shared=shared, **parts)
