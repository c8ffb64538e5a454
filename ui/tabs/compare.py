"""The Compare tab: any two finished runs side by side (playing in step), their costs, PSNR/SSIM."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

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


def build(shared: Shared) -> CompareTab:
    """Lay out the Compare tab (call inside the page's ``gr.Tabs``); wire it with :meth:`CompareTab.wire`."""
    with gr.Tab("Compare", id="compare", elem_id="tab-compare"):
        gr.Markdown("Pick any two finished runs. **A** is the reference (usually the original "
                    "model), **B** the one to judge; the videos play in step.")
        with gr.Row():
            a = gr.Dropdown(label="A (reference)", choices=[], elem_id="cmp-a", allow_custom_value=True)
            b = gr.Dropdown(label="B", choices=[], elem_id="cmp-b", allow_custom_value=True)
        with gr.Row():
            go = gr.Button("Compare", variant="primary", elem_id="cmp-go")
            refresh = gr.Button("Refresh the lists", elem_id="cmp-refresh")
            sbs = gr.Button("Make side-by-side mp4", elem_id="cmp-sbs")
        videos = gr.HTML(elem_id="cmp-videos")
        with gr.Row(equal_height=False):
            table = gr.Dataframe(headers=["", "A", "B", "A / B"], interactive=False, elem_id="cmp-table",
                                 wrap=True, scale=3)
            with gr.Column(scale=2):
                quality = gr.Markdown(elem_id="cmp-quality")
                file = gr.File(label="Side-by-side mp4", elem_id="cmp-file", interactive=False)
    return CompareTab(shared=shared, a=a, b=b, go=go, refresh=refresh, sbs=sbs, videos=videos, table=table,
                      quality=quality, file=file)
