"""The Admin tab: unlock with the admin password, then finetune jobs and registered checkpoints."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import gradio as gr

import service
from ui import views
from ui.auth import admin_password, client_key, guard
from ui.tabs.common import PageError, Shared, friendly, model_choices, teacher_choices

JOB_HEADERS = ["id", "name", "kind", "base", "status", "step", "progress", "loss", "created (UTC)"]
CHECKPOINT_HEADERS = ["id", "name", "kind", "base", "path", "created (UTC)"]
DEFAULT_JOB_CONFIG = json.dumps({"data": "world:64", "steps": 50, "schedule": "2-2-1"}, indent=2)
#: A distillation's other settings (method, teacher, student plan and steps have fields of their own).
DEFAULT_DISTILL_CONFIG = json.dumps({"data": "world:64", "batch": 4}, indent=2)
DEFAULT_CONFIGS = {"pyramidal": DEFAULT_JOB_CONFIG, "distill": DEFAULT_DISTILL_CONFIG}
#: The job kinds of the form, (label, value) as :func:`service.submit_job` takes them.
JOB_KIND_CHOICES = [("pyramidal finetune", "pyramidal"), ("distillation", "distill")]
DISTILL_METHODS = ["dmd-ot", "dmd-pt", "dmd-pt-star", "adversarial"]


def jobs_rows() -> list[list[Any]]:
    """The finetune jobs table (the newest 200)."""
    return [views.job_row(j) for j in service.list_jobs(limit=200)["items"]] or [[""] * len(JOB_HEADERS)]


def checkpoint_rows() -> list[list[Any]]:
    """The registered checkpoints table (the presets are not listed)."""
    return ([views.checkpoint_row(c) for c in service.list_checkpoints() if not c["builtin"]]
            or [[""] * len(CHECKPOINT_HEADERS)])


def request_client(request: gr.Request | None) -> str:
    """The admin lockout's client key: the peer, or X-Forwarded-For behind a trusted proxy."""
    try:
        peer = request.client.host if request is not None and request.client else None
        headers = request.headers if request is not None else None
        forwarded = headers.getlist("x-forwarded-for") if hasattr(headers, "getlist") else (
            headers.get("x-forwarded-for") if headers is not None else None)
    except AttributeError:
        peer, forwarded = None, None
    return client_key(peer, forwarded)


def admin_only(fn):
    """Refuse ``fn`` (called with the session's unlocked flag first) unless the session unlocked the tab."""

    def wrapper(is_admin, *args):
        if not is_admin:
            raise PageError("unlock the admin tab with the password first")
        return fn(*args)

    wrapper.__name__ = getattr(fn, "__name__", "admin_action")
    return friendly(wrapper)


def _checkpoint_id(value) -> int:
    if not value:
        raise PageError("enter a checkpoint id")
    return int(value)


def _job_id(value) -> int:
    if not value:
        raise PageError("enter a job id")
    return int(value)


@dataclass(eq=False)
class AdminTab:
    """The Admin tab's components and its event handlers (each returns ``{component: value}``).
    ``model`` is the Generate tab's model picker: checkpoint changes refresh its choices."""

    shared: Shared
    model: gr.Dropdown
    password: gr.Textbox
    unlock: gr.Button
    message: gr.Markdown
    panel: gr.Column
    job_kind: gr.Radio
    job_name: gr.Textbox
    job_base: gr.Dropdown
    distill_box: gr.Group
    job_method: gr.Dropdown
    job_teacher: gr.Dropdown
    job_plan: gr.Textbox
    job_steps: gr.Number
    job_config: gr.Code
    job_start: gr.Button
    job_table: gr.Dataframe
    job_id: gr.Number
    job_follow: gr.Button
    job_cancel: gr.Button
    job_refresh: gr.Button
    job_detail: gr.Markdown
    job_plot: gr.LinePlot
    job_timer: gr.Timer
    ckpt_table: gr.Dataframe
    ckpt_id: gr.Number
    ckpt_name: gr.Textbox
    ckpt_rename: gr.Button
    ckpt_delete: gr.Button
    ckpt_path: gr.Textbox
    ckpt_base: gr.Dropdown
    ckpt_new_name: gr.Textbox
    ckpt_register: gr.Button
    ckpt_message: gr.Markdown

    def on_unlock(self, pw, request: gr.Request):
        """Check the password (with the lockout per client); on success show the panel and its tables."""
        verdict = guard.check(pw, request_client(request))
        if not verdict.ok:
            return {self.message: f"⚠ {verdict.message}", self.shared.admin_ok: False,
                    self.panel: gr.update(visible=False), self.password: ""}
        return {self.message: "✓ " + verdict.message, self.shared.admin_ok: True,
                self.panel: gr.update(visible=True), self.job_table: jobs_rows(),
                self.ckpt_table: checkpoint_rows(), self.password: "",
                self.job_teacher: gr.update(choices=teacher_choices())}

    def refresh_tables(self):
        return {self.job_table: jobs_rows(), self.ckpt_table: checkpoint_rows(),
                self.job_teacher: gr.update(choices=teacher_choices())}

    # ------------------------------------------------------------ jobs
    def follow_job(self, job_id):
        """The job's detail and loss curves (a distillation: generator and critic); the timer keeps
        following it until it is final, and then Generate's model list takes its checkpoint."""
        import pandas as pd

        job = service.get_job(_job_id(job_id))
        final = job["status"] in views.FINAL
        frame = pd.DataFrame(views.loss_series(job), columns=["step", "loss", "series"])
        return {self.job_detail: views.job_detail(job), self.job_plot: gr.update(value=frame, visible=True),
                self.job_timer: gr.Timer(active=not final),
                self.model: gr.update(choices=model_choices()) if final else gr.skip()}

    def cancel_job(self, job_id):
        job = service.cancel_job(_job_id(job_id))
        stopping = " (stopping)" if job.get("cancel_requested") and job["status"] == "running" else ""
        return {self.job_detail: f"Job #{job['id']} is {job['status']}{stopping}.", self.job_table: jobs_rows()}

    def on_kind(self, kind, config_text):
        """The distillation fields show for a distillation; untouched settings swap to the kind's default."""
        untouched = (config_text or "").strip() in [c.strip() for c in DEFAULT_CONFIGS.values()] + [""]
        return {self.distill_box: gr.update(visible=kind == "distill"),
                self.job_config: DEFAULT_CONFIGS.get(kind, DEFAULT_JOB_CONFIG) if untouched else gr.update(),
                self.job_teacher: gr.update(choices=teacher_choices())}

    def start_job(self, kind, name, base, config_text, method="dmd-pt-star", teacher=None, plan="2-2-1",
                  steps=None):
        """Queue a job of ``kind``: the JSON settings, and for a distillation the method, teacher
        (a registered checkpoint's name), student plan and steps of the form."""
        try:
            config = json.loads(config_text or "{}")
        except json.JSONDecodeError as exc:
            raise PageError(f"the training settings are not valid JSON: {exc}") from None
        if not isinstance(config, dict):
            raise PageError("the training settings must be a JSON object: {\"data\": \"world:64\", ...}")
        if kind == "distill":
            config = {**config, "kind": "distill", "method": method, "student_plan": (plan or "").strip()}
            if teacher:
                config["teacher"] = teacher
            if steps not in (None, ""):
                config["steps"] = int(steps)
        job = service.submit_job(name=name, base=base, config=config)
        return {self.job_detail: f"Queued job #{job['id']}.", self.job_table: jobs_rows()}

    # ------------------------------------------------------------ checkpoints
    def _checkpoints_changed(self, text: str):
        return {self.ckpt_message: text, self.ckpt_table: checkpoint_rows(),
                self.model: gr.update(choices=model_choices())}

    def rename_checkpoint(self, cid, name):
        row = service.rename_checkpoint(_checkpoint_id(cid), name)
        return self._checkpoints_changed(f"Checkpoint #{row['id']} is now `{row['name']}`.")

    def delete_checkpoint(self, cid):
        row = service.delete_checkpoint(_checkpoint_id(cid))
        return self._checkpoints_changed(f"Unregistered checkpoint `{row['name']}` (its folder stays on disk).")

    def register_checkpoint(self, path, base, name):
        row = service.register_checkpoint(path, base, name, roots=service.allowed_roots())
        return self._checkpoints_changed(f"Registered `{row['name']}` over `{row['base']}`.")

    def wire(self) -> None:
        """Attach the tab's events (call inside the page's Blocks)."""
        unlocked = [self.message, self.shared.admin_ok, self.panel, self.job_table, self.ckpt_table, self.password,
                    self.job_teacher]
        self.unlock.click(self.on_unlock, [self.password], unlocked, api_name=False)
        self.password.submit(self.on_unlock, [self.password], unlocked, api_name=False)
        ok = self.shared.admin_ok
        followed = [self.job_detail, self.job_plot, self.job_timer, self.model]
        self.job_refresh.click(admin_only(self.refresh_tables), [ok], [self.job_table, self.ckpt_table,
                                                                       self.job_teacher], api_name=False)
        self.job_follow.click(admin_only(self.follow_job), [ok, self.job_id], followed, api_name=False)
        self.job_timer.tick(admin_only(self.follow_job), [ok, self.job_id], followed, api_name=False,
                            show_progress="hidden")
        self.job_cancel.click(admin_only(self.cancel_job), [ok, self.job_id], [self.job_detail, self.job_table],
                              api_name=False)
        self.job_kind.change(admin_only(self.on_kind), [ok, self.job_kind, self.job_config],
                             [self.distill_box, self.job_config, self.job_teacher], api_name=False)
        form = [ok, self.job_kind, self.job_name, self.job_base, self.job_config, self.job_method, self.job_teacher,
                self.job_plan, self.job_steps]
        self.job_start.click(admin_only(self.start_job), form, [self.job_detail, self.job_table], api_name=False)
        changed = [self.ckpt_message, self.ckpt_table, self.model]
        self.ckpt_rename.click(admin_only(self.rename_checkpoint), [ok, self.ckpt_id, self.ckpt_name], changed,
                               api_name=False)
        self.ckpt_delete.click(admin_only(self.delete_checkpoint), [ok, self.ckpt_id], changed, api_name=False)
        self.ckpt_register.click(admin_only(self.register_checkpoint),
                                 [ok, self.ckpt_path, self.ckpt_base, self.ckpt_new_name], changed, api_name=False)


def _jobs_layout(presets: list[str]) -> dict[str, Any]:
    c: dict[str, Any] = {}
    gr.Markdown("### Finetune jobs")
    with gr.Accordion("Start a finetune job", open=False):
        c["job_kind"] = gr.Radio(JOB_KIND_CHOICES, value="pyramidal", label="Kind", elem_id="job-kind",
                                 info="a pyramidal finetune, or the distillation of a pyramidal model into a "
                                      "few-step student")
        with gr.Row():
            c["job_name"] = gr.Textbox(label="Checkpoint name", elem_id="job-name")
            c["job_base"] = gr.Dropdown(presets, label="Base model", elem_id="job-base")
        with gr.Group(visible=False, elem_id="job-distill") as c["distill_box"]:
            with gr.Row():
                c["job_method"] = gr.Dropdown(DISTILL_METHODS, value="dmd-pt-star", label="Method",
                                              elem_id="job-method",
                                              info="dmd-pt-star: the paper's recipe; dmd-ot: the original teacher")
                c["job_teacher"] = gr.Dropdown([], label="Teacher", elem_id="job-teacher", allow_custom_value=True,
                                               info="a registered pyramidal checkpoint (none for dmd-ot)")
                c["job_plan"] = gr.Textbox(value="2-2-1", label="Student plan", elem_id="job-plan",
                                           info="the student's steps per stage")
                c["job_steps"] = gr.Number(value=200, precision=0, minimum=1, label="Steps", elem_id="job-steps",
                                           info="generator steps")
        c["job_config"] = gr.Code(value=DEFAULT_JOB_CONFIG, language="json", elem_id="job-config",
                                  label="Training settings (JSON: steps, data, schedule, lr, lora_rank, batch, ...)")
        c["job_start"] = gr.Button("Start", variant="primary", elem_id="job-start")
    c["job_table"] = gr.Dataframe(headers=JOB_HEADERS, interactive=False, elem_id="jobs-table")
    with gr.Row():
        c["job_id"] = gr.Number(label="Job", value=None, precision=0, minimum=1, elem_id="job-id")
        c["job_follow"] = gr.Button("Follow", elem_id="job-follow")
        c["job_cancel"] = gr.Button("Cancel job", variant="stop", elem_id="job-cancel")
        c["job_refresh"] = gr.Button("Refresh", elem_id="job-refresh")
    c["job_detail"] = gr.Markdown(elem_id="job-detail")
    c["job_plot"] = gr.LinePlot(x="step", y="loss", color="series", title="Loss", elem_id="job-loss", height=260,
                                visible=False)
    c["job_timer"] = gr.Timer(2.0, active=False)
    return c


def _checkpoints_layout(presets: list[str]) -> dict[str, Any]:
    c: dict[str, Any] = {}
    gr.Markdown("### Checkpoints")
    c["ckpt_table"] = gr.Dataframe(headers=CHECKPOINT_HEADERS, interactive=False, elem_id="ckpt-table")
    with gr.Row():
        c["ckpt_id"] = gr.Number(label="Checkpoint", value=None, precision=0, minimum=1, elem_id="ckpt-id")
        c["ckpt_name"] = gr.Textbox(label="New name", elem_id="ckpt-name")
        c["ckpt_rename"] = gr.Button("Rename", elem_id="ckpt-rename")
        c["ckpt_delete"] = gr.Button("Delete", variant="stop", elem_id="ckpt-delete")
    with gr.Accordion("Register a checkpoint folder", open=False):
        with gr.Row():
            c["ckpt_path"] = gr.Textbox(label="Folder on the server", elem_id="ckpt-path")
            c["ckpt_base"] = gr.Dropdown(presets, label="Base model", elem_id="ckpt-base")
            c["ckpt_new_name"] = gr.Textbox(label="Name", elem_id="ckpt-new-name")
        c["ckpt_register"] = gr.Button("Register", elem_id="ckpt-register")
    c["ckpt_message"] = gr.Markdown(elem_classes=["pw-message"])
    return c


def build(shared: Shared, model: gr.Dropdown) -> AdminTab:
    """Lay out the Admin tab (call inside the page's ``gr.Tabs``); wire it with :meth:`AdminTab.wire`.
    ``model``: the Generate tab's model picker, refreshed when checkpoints change."""
    from core import list_presets

    with gr.Tab("Admin", id="admin", elem_id="tab-admin"):
        enabled = admin_password() is not None
        gr.Markdown("Finetune jobs and checkpoints. Enter the admin password to unlock." if enabled else
                    "**Admin features are off on this server.** Start it with "
                    "`PWAN_ADMIN_PASSWORD=...` to manage finetune jobs and checkpoints.")
        with gr.Row(visible=enabled):
            password = gr.Textbox(label="Admin password", type="password", elem_id="admin-password")
            unlock = gr.Button("Unlock", variant="primary", elem_id="admin-unlock", scale=0)
        message = gr.Markdown(elem_id="admin-message", elem_classes=["pw-message"])
        with gr.Column(visible=False, elem_id="admin-panel") as panel:
            parts = {**_jobs_layout(list_presets()), **_checkpoints_layout(list_presets())}
    return AdminTab(shared=shared, model=model, password=password, unlock=unlock, message=message, panel=panel,
                    **parts)
