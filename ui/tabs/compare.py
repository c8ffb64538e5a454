"""The Compare tab: any two finished runs side by side (playing in step), their costs, PSNR/SSIM;
or one run decoded both ways (the full decoder and the tiny one), its decode seconds and PSNR."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

import service
from ui import compare as comparing
from ui import views
from ui.tabs.common import PageError, Shared, done_run_choices, friendly


@dataclass(eq=False)
class CompareTab:
    """The Compare tab's components and its event handlers (each returns ``{component: value}``)."""

    shared: Shared
    a: gr.Dropdown
    b: gr.Dropdown
    go: gr.Button
    refresh: gr.Button
    sbs: gr.Button
    videos: gr.HTML
    table: gr.Dataframe
    quality: gr.Markdown
    file: gr.File
    both: gr.Button
    message: gr.Markdown
    both_watch: gr.State
    both_timer: gr.Timer

    def show(self, a, b):
        """Videos side by side (in step), the cost table, PSNR/SSIM."""
        import pandas as pd

        if not a or not b:
            raise PageError("pick two finished runs to compare")
        result = comparing.compare_runs(int(a), int(b))
        ra, rb = result["runs"]
        rows = result["table"]
        return {self.videos: views.videos_html([ra, rb], group=f"cmp-{ra['id']}-{rb['id']}"),
                self.table: pd.DataFrame(rows[1:], columns=["", f"A: {rows[0][1]}", f"B: {rows[0][2]}", "A / B"]),
                self.quality: views.comparison_summary(result["quality"], result["speedup"])}

    def decode_both(self, a, held):
        """Run A decoded both ways: shown at once when it was, else queued again (same settings
        and seed) with ``decoder="both"`` and followed until it is done."""
        if not a:
            raise PageError("pick run A first: it is decoded both ways")
        row = service.get_run(int(a))
        if row["status"] == "done" and row.get("decoder") == "both":
            return {**self._both_view(row), self.message: "", self.both_timer: gr.Timer(active=False)}
        new = service.rerun(int(a), decoder="both")
        return {self.message: f"Queued run #{new['id']}: run #{row['id']} again (seed {new['seed']}), "
                              "decoded both ways.",
                self.both_watch: new["id"], self.both_timer: gr.Timer(active=True),
                self.videos: views.progress_html(new), self.shared.held_tokens: {**(held or {}),
                                                                                 str(new["id"]): new["cancel_token"]}}

    def poll_both(self, run_id):
        """One poll of the run being decoded both ways: its progress, then both videos."""
        if not run_id:
            return {self.both_timer: gr.Timer(active=False)}
        row = service.get_run(int(run_id))
        if row["status"] not in views.FINAL:
            return {self.videos: views.progress_html(row)}
        if row["status"] != "done":
            return {self.videos: views.progress_html(row), self.message: f"⚠ run #{row['id']} {row['status']}: "
                    f"{row.get('error') or ''}", self.both_timer: gr.Timer(active=False)}
        return {**self._both_view(row), self.both_timer: gr.Timer(active=False)}

    def _both_view(self, row: dict) -> dict:
        import pandas as pd

        return {self.videos: views.decode_both_html(row, group=f"cmp-both-{row['id']}"),
                self.table: pd.DataFrame(views.decode_both_table(row),
                                         columns=["", f"A: run #{row['id']}, full decoder", "B: tiny decoder",
                                                  "A / B"]),
                self.quality: views.decode_both_summary(row)}

    def side_by_side(self, a, b):
        """One labelled mp4 of both videos."""
        if not a or not b:
            raise PageError("pick two finished runs first")
        return {self.file: comparing.side_by_side(int(a), int(b))}

    def offer(self, runs, **values):
        """Both pickers list ``runs``; ``a=``/``b=`` also select (a picker not named keeps its choice)."""
        return {getattr(self, side): gr.update(choices=runs, **({"value": values[side]} if side in values else {}))
                for side in ("a", "b")}

    def refresh_lists(self):
        return self.offer(done_run_choices())

    def open_with(self, side: str, run_id):
        """Switch to this tab with ``run_id`` picked as ``side`` ("a" or "b") (History's buttons)."""
        runs = done_run_choices()
        if not run_id:
            raise PageError("select a run in the table first")
        if int(run_id) not in [v for _, v in runs]:
            raise PageError(f"run #{int(run_id)} is not finished: only finished runs can be compared")
        return {self.shared.tabs: gr.Tabs(selected="compare"),
                getattr(self, side): gr.update(choices=runs, value=int(run_id))}

    @property
    def shown(self) -> list:
        """What :meth:`show` fills."""
        return [self.videos, self.table, self.quality]

    def wire(self) -> None:
        """Attach the tab's events (call inside the page's Blocks)."""
        self.go.click(friendly(self.show), [self.a, self.b], self.shown, api_name="compare")
        self.sbs.click(friendly(self.side_by_side), [self.a, self.b], [self.file], api_name="side_by_side")
        self.refresh.click(friendly(self.refresh_lists), None, [self.a, self.b], api_name=False)
        both_out = [*self.shown, self.message, self.both_watch, self.both_timer, self.shared.held_tokens]
        self.both.click(friendly(self.decode_both), [self.a, self.shared.held_tokens], both_out,
                        api_name="decode_both")
        self.both_timer.tick(friendly(self.poll_both), [self.both_watch],
                             [*self.shown, self.message, self.both_timer], api_name=False, show_progress="hidden")


def build(shared: Shared) -> CompareTab:
    """Lay out the Compare tab (call inside the page's ``gr.Tabs``); wire it with :meth:`CompareTab.wire`."""
    with gr.Tab("Compare", id="compare", elem_id="tab-compare"):
        gr.Markdown("Pick any two finished runs. **A** is the reference (usually the original "
                    "model), **B** the one to judge; the videos play in step. **Decode A both ways** "
                    "shows run A's video from the full decoder beside the tiny decoder's.")
        with gr.Row():
            a = gr.Dropdown(label="A (reference)", choices=[], elem_id="cmp-a", allow_custom_value=True)
            b = gr.Dropdown(label="B", choices=[], elem_id="cmp-b", allow_custom_value=True)
        with gr.Row():
            go = gr.Button("Compare", variant="primary", elem_id="cmp-go")
            refresh = gr.Button("Refresh the lists", elem_id="cmp-refresh")
            sbs = gr.Button("Make side-by-side mp4", elem_id="cmp-sbs")
            both = gr.Button("Decode A both ways", elem_id="cmp-both")
        message = gr.Markdown(elem_id="cmp-message", elem_classes=["pw-message"])
        videos = gr.HTML(elem_id="cmp-videos")
        with gr.Row(equal_height=False):
            table = gr.Dataframe(headers=["", "A", "B", "A / B"], interactive=False, elem_id="cmp-table",
                                 wrap=True, scale=3)
            with gr.Column(scale=2):
                quality = gr.Markdown(elem_id="cmp-quality")
                file = gr.File(label="Side-by-side mp4", elem_id="cmp-file", interactive=False)
        both_watch, both_timer = gr.State(None), gr.Timer(1.0, active=False)  # the run decoded both ways
    return CompareTab(shared=shared, a=a, b=b, go=go, refresh=refresh, sbs=sbs, videos=videos, table=table,
                      quality=quality, file=file, both=both, message=message, both_watch=both_watch,
                      both_timer=both_timer)
