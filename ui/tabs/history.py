"""The History tab: every run, filtered; open one, run it again, cancel, delete, or compare it."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import gradio as gr

import service
from ui import views
from ui.tabs.common import PageError, Shared, cancel_with_session, friendly

HEADERS = ["id", "still", "status", "model", "mode", "plan", "size", "seed", "created (UTC)", "seconds", "prompt",
           "decoder"]
#: The still column is HTML (an <img> from /api/runs/{id}/still); the others plain text.
TYPES = ["str", "html"] + ["str"] * (len(HEADERS) - 2)
EMPTY = [[""] * len(HEADERS)]
STATUSES = ["queued", "running", "done", "failed", "cancelled"]


def history_rows(status, search, model) -> list[list[Any]]:
    """The table's rows for the filters (the newest 200 runs that match)."""
    page = service.list_runs(status=status or None, search=search or None, model=model or None, limit=200)
    return [views.history_row(r) for r in page["items"]] or EMPTY


def _selected(run_id) -> int:
    if not run_id:
        raise PageError("select a run in the table first")
    return int(run_id)


@dataclass(eq=False)
class HistoryTab:
    """The History tab's components and its event handlers (each returns ``{component: value}``)."""

    shared: Shared
    status: gr.Dropdown
    model: gr.Dropdown
    search: gr.Textbox
    refresh: gr.Button
    table: gr.Dataframe
    run_id: gr.Number
    open: gr.Button
    rerun: gr.Button
    cancel: gr.Button
    as_a: gr.Button
    as_b: gr.Button
    delete: gr.Button
    message: gr.Markdown
    videos: gr.HTML
    card: gr.Markdown

    @property
    def filters(self) -> list:
        return [self.status, self.search, self.model]

    def reload(self, status, search, model):
        return {self.table: history_rows(status, search, model)}

    def on_select(self, evt: gr.SelectData):
        """A click in the table selects that row's run."""
        value = (evt.row_value or [None])[0]
        return {self.run_id: int(value) if str(value).isdigit() else gr.skip()}

    def open_run(self, run_id):
        """The run's video (or its progress card while it is not done) and its card."""
        row = service.get_run(_selected(run_id))
        original = None
        if row.get("comparison_id"):
            group = service.get_comparison(row["comparison_id"])
            original = next((r for r in group["runs"] if r["mode"] == "original"), None)
        shown = (views.videos_html([row], group=f"hist-{row['id']}") if row["status"] == "done"
                 else views.progress_html(row))
        return {self.videos: shown, self.card: views.run_card(row, original)}

    def soft(self, fn):
        """History actions: a refused action is a message; the table (and the rest) stays as it is."""
        checked = friendly(fn)

        @functools.wraps(fn)
        def wrapper(*args):
            try:
                return checked(*args)
            except gr.Error as exc:
                return {self.message: f"⚠ {exc.message}"}

        return wrapper

    def run_again(self, run_id, held, *filters):
        """Queue a run with the selected run's settings and seed; this session holds its token."""
        source = _selected(run_id)
        row = service.rerun(source)
        return {self.message: f"Queued run #{row['id']} with the settings (and seed) of run #{source}.",
                self.table: history_rows(*filters),
                self.shared.held_tokens: {**(held or {}), str(row["id"]): row["cancel_token"]}}

    def cancel_run(self, run_id, held, is_admin, *filters):
        row = cancel_with_session(_selected(run_id), held, is_admin)
        what = ("cancelled" if row["status"] == "cancelled" else
                "will stop at its next step" if row["status"] == "running" else f"was already {row['status']}")
        return {self.message: f"Run #{row['id']} {what}.", self.table: history_rows(*filters)}

    def delete_run(self, run_id, is_admin, *filters):
        if not is_admin:
            raise PageError("deleting runs needs the admin password (unlock it in the Admin tab)")
        row = service.delete_run(_selected(run_id))
        return {self.message: f"Deleted run #{row['id']}.", self.table: history_rows(*filters)}

    def wire(self) -> None:
        """Attach the tab's events (call inside the page's Blocks)."""
        reload = friendly(self.reload)
        self.refresh.click(reload, self.filters, [self.table], api_name="history")
        self.search.submit(reload, self.filters, [self.table], api_name=False)
        self.status.change(reload, self.filters, [self.table], api_name=False)
        self.model.change(reload, self.filters, [self.table], api_name=False)
        self.table.select(self.on_select, None, [self.run_id], api_name=False)
        self.open.click(friendly(self.open_run), [self.run_id], [self.videos, self.card], api_name=False)
        held, admin_ok = self.shared.held_tokens, self.shared.admin_ok
        self.rerun.click(self.soft(self.run_again), [self.run_id, held] + self.filters,
                         [self.message, self.table, held], api_name=False)
        self.cancel.click(self.soft(self.cancel_run), [self.run_id, held, admin_ok] + self.filters,
                          [self.message, self.table], api_name=False)
        self.delete.click(self.soft(self.delete_run), [self.run_id, admin_ok] + self.filters,
                          [self.message, self.table], api_name=False)


def build(shared: Shared) -> HistoryTab:
    """Lay out the History tab (call inside the page's ``gr.Tabs``); wire it with :meth:`HistoryTab.wire`."""
    from core import list_presets

    with gr.Tab("History", id="history", elem_id="tab-history"):
        with gr.Row():
            status = gr.Dropdown(STATUSES, multiselect=True, label="Status", elem_id="h-status")
            model = gr.Dropdown(choices=[""] + list_presets(), value="", label="Model", elem_id="h-model")
            search = gr.Textbox(label="Prompt contains", elem_id="h-search")
            refresh = gr.Button("Refresh", elem_id="h-refresh", scale=0)
        table = gr.Dataframe(headers=HEADERS, value=EMPTY, interactive=False, datatype=TYPES, elem_id="h-table",
                             wrap=True, max_height=420)
        with gr.Row():
            run_id = gr.Number(label="Selected run", value=None, precision=0, elem_id="h-id", minimum=1)
            buttons = dict(open=gr.Button("Open", elem_id="h-open"),
                           rerun=gr.Button("Run again", elem_id="h-rerun"),
                           cancel=gr.Button("Cancel", elem_id="h-cancel"),
                           as_a=gr.Button("Compare as A", elem_id="h-as-a"),
                           as_b=gr.Button("Compare as B", elem_id="h-as-b"),
                           delete=gr.Button("Delete (admin)", variant="stop", elem_id="h-delete"))
        message = gr.Markdown(elem_id="h-message", elem_classes=["pw-message"])
        videos = gr.HTML(elem_id="h-videos")
        card = gr.Markdown(elem_id="h-card", elem_classes=["pw-card"])
    return HistoryTab(shared=shared, status=status, model=model, search=search, refresh=refresh, table=table,
                      run_id=run_id, message=message, videos=videos, card=card, **buttons)
