"""The Gradio page: the Generate, Compare, History and Admin tabs (:mod:`ui.tabs`) on one page.

The page never runs a model. It writes runs through :mod:`service` and follows them by polling
the database (a ``gr.Timer`` while something is in flight). Videos are served by the REST API
(``/api/runs/{id}/video``) and played by plain ``<video>`` elements, so two of them can play in
step (``static/studio.js``). This module lays the tabs out, holds the page-wide state, and wires
what crosses tabs: the page load, tab selection, and the buttons that open Compare.
"""
from __future__ import annotations

import logging

import gradio as gr

import service
from ui.tabs import admin, common, compare, generate, history

log = logging.getLogger(__name__)

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
    """The whole page: header, banner, the four tabs, and their events."""
    with gr.Blocks(title="Pyramidal Wan studio", analytics_enabled=False) as page:
        gr.HTML(HEADER)
        banner = gr.Markdown(visible=False, elem_classes=["pw-banner"])
        admin_ok = gr.State(False)
        held_tokens = gr.State({})
        with gr.Tabs(selected="generate") as tabs:
            shared = common.Shared(tabs=tabs, banner=banner, admin_ok=admin_ok, held_tokens=held_tokens)
            gen = generate.build(shared)
            cmp = compare.build(shared)
            hist = history.build(shared)
            adm = admin.build(shared, model=gen.model)
        _wire_load(page, shared, gen, cmp, hist)
        gen.wire()
        _wire_open_compare(gen, cmp)
        cmp.wire()
        hist.wire()
        hist.as_a.click(_compare_as(cmp, "a"), [hist.run_id], [tabs, cmp.a], api_name=False)
        hist.as_b.click(_compare_as(cmp, "b"), [hist.run_id], [tabs, cmp.b], api_name=False)
        adm.wire()
        _wire_tab_select(shared, cmp, hist)
    return page


def _compare_as(cmp: compare.CompareTab, side: str):
    """History's "Compare as A/B": open Compare with the selected run on ``side``."""

    def open_as(run_id):
        return cmp.open_with(side, run_id)

    open_as.__name__ = f"compare_as_{side}"
    return common.friendly(open_as)


def _default_model(choices: list[tuple[str, str]]) -> tuple[str | None, str]:
    """The model to select and a banner line when the configured default is not a known preset."""
    from core import default_preset

    values = [v for _, v in choices]
    default = default_preset()
    if default not in values:
        return (choices[0][1] if choices else None,
                f"⚠ The default model **{default}** (PWAN_MODEL) is not a known preset; "
                f"choose one of the models listed.")
    return common.shipped_pyramidal(default, values), ""


def _on_load(shared, gen, cmp, hist, model_value, params: dict) -> dict:
    """Fresh model choices, the banner, and a ``?comparison=``/``?run=`` link's tab. The model and
    guidance boxes change only when the default differs from the value the page was built with
    (``model_value``, sent when the page mounted): what a user typed while the load was in flight
    stays."""
    banner, choices, default = "", [], None
    try:
        choices = common.model_choices()
        default, banner = _default_model(choices)
    except Exception as exc:  # noqa: BLE001
        log.exception("page load failed")
        banner = (f"⚠ The run database cannot be reached ({type(exc).__name__}: {exc}). "
                  "Check PWAN_DATABASE_URL and reload the page.")
    runs = []
    try:
        runs = common.done_run_choices()
    except Exception:  # noqa: BLE001 - reported by the banner above
        pass
    out = cmp.offer(runs)
    if params.get("comparison", "").isdigit():
        try:
            ids = [r["id"] for r in service.get_comparison(int(params["comparison"]))["runs"]]
            if len(ids) >= 2:
                out = {**cmp.offer(runs, a=ids[0], b=ids[1]), shared.tabs: gr.Tabs(selected="compare")}
        except Exception:  # noqa: BLE001
            banner = f"There is no comparison {params['comparison']}."
    elif params.get("run", "").isdigit():
        out.update({shared.tabs: gr.Tabs(selected="history"), hist.run_id: int(params["run"])})
    if default is None or default == model_value:
        out[gen.model] = gr.update(choices=choices)
    else:
        out.update({gen.model: gr.update(choices=choices, value=default), gen.guidance: common.model_guidance(default)})
    return {**out, shared.banner: gr.update(value=banner, visible=bool(banner))}


def _wire_load(page, shared, gen, cmp, hist) -> None:
    """The page load; the body's data-pw-loaded then tells scripts (and the browser tests) it has landed."""

    def on_load(model_value, request: gr.Request):
        params = dict(request.query_params) if request is not None else {}
        return _on_load(shared, gen, cmp, hist, model_value, params)

    outputs = [shared.banner, gen.model, cmp.a, cmp.b, shared.tabs, hist.run_id, gen.guidance]
    page.load(on_load, [gen.model], outputs, api_name=False).then(
        None, None, None, js="() => { document.body.dataset.pwLoaded = '1'; }")


def _wire_open_compare(gen, cmp) -> None:
    """Generate's "Open in Compare": the comparison just made, picked as A and B, then compared."""

    def to_compare(watch_state):
        ids = (watch_state or {}).get("run_ids") or []
        runs = common.done_run_choices()
        if len(ids) < 2:
            return cmp.offer(runs)
        return {**cmp.offer(runs, a=ids[0], b=ids[1]), cmp.shared.tabs: gr.Tabs(selected="compare")}

    gen.open_compare.click(to_compare, [gen.watch], [cmp.shared.tabs, cmp.a, cmp.b], api_name=False).then(
        common.friendly(cmp.show), [cmp.a, cmp.b], cmp.shown, api_name=False)


def _wire_tab_select(shared, cmp, hist) -> None:
    """Selecting Compare or History reloads its lists."""

    def on_select(evt: gr.SelectData, a, b, *filters):
        target = getattr(evt, "value", None)
        if target == "Compare":
            return cmp.offer(common.done_run_choices(), a=a, b=b)
        if target == "History":
            return hist.reload(*filters)
        return gr.skip()

    shared.tabs.select(common.friendly(on_select), [cmp.a, cmp.b] + hist.filters, [cmp.a, cmp.b, hist.table],
                       api_name=False)
