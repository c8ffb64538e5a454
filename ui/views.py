"""What the page shows, as plain functions of run rows (dicts from :mod:`service`).

Nothing here touches the database or Gradio, so every piece is easy to test.
"""
from __future__ import annotations

import datetime as dt
import html
import math
from typing import Any

SCHEDULE_PRESETS = ["2-2-1", "10-10-5", "20-20-10", "0-0-50"]
DEFAULT_SCHEDULE = "10-10-5"  # half the paper's 20-20-10: good videos from the mini model, quick on a CPU
DEFAULT_GUIDANCE = "5"
#: (height, width) candidates; each plan keeps those it accepts (StagePlan.valid_sizes).
SIZE_CANDIDATES = [(64, 64), (128, 128), (192, 192), (256, 256), (384, 384), (512, 512),
                   (256, 448), (448, 256), (480, 832), (832, 480)]
FRAME_CANDIDATES = [1, 9, 17, 33, 49, 81]
DEFAULT_SIZE = "17 x 128 x 128"
FINAL = ("done", "failed", "cancelled")


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


# ---------------------------------------------------------------------------- plans and sizes
def plan_for(schedule: str):
    """The StagePlan of ``schedule`` or a RequestError."""
    from core import StagePlan

    return StagePlan.parse(schedule)


def size_label(frames: int, height: int, width: int) -> str:
    return f"{frames} x {height} x {width}"


def parse_size(label: str) -> tuple[int, int, int]:
    """``"17 x 128 x 128"`` -> (17, 128, 128) (frames, height, width)."""
    try:
        f, h, w = (int(p) for p in str(label).lower().replace("×", "x").split("x"))
    except ValueError:
        raise ValueError(f"size {label!r} is not valid; pick one like {DEFAULT_SIZE}") from None
    return f, h, w


def valid_sizes(schedule: str) -> list[str]:
    """Every frames x height x width the plan of ``schedule`` accepts (empty if it does not parse)."""
    from core import RequestError

    try:
        plan = plan_for(schedule)
    except RequestError:
        return []
    fm = plan.frame_multiple
    frames = [f for f in FRAME_CANDIDATES if (f - 1) % fm == 0]
    return [size_label(f, h, w) for h, w in plan.valid_sizes(SIZE_CANDIDATES) for f in frames]


def baseline_of(schedule: str) -> str:
    from service import ValidationError, baseline_schedule

    try:
        return baseline_schedule(schedule)
    except ValidationError:
        return schedule


def parse_guidance(text: Any) -> float | list[float]:
    """``"5"`` -> 5.0, ``"7, 5, 3"`` -> [7.0, 5.0, 3.0] (one per stage)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    parts = [p.strip() for p in str(text or "").replace(";", ",").split(",") if p.strip()]
    if not parts:
        return 5.0
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(
            f"guidance {text!r} is not valid: write one number (5) or one per stage (7, 5, 3)"
        ) from None
    return values[0] if len(values) == 1 else values


# ---------------------------------------------------------------------------- distilled checkpoints
def few_step_recipe(card: dict | None):
    """The locked recipe of a distilled (few-step) checkpoint's card
    (:class:`core.fewstep.FewStepRecipe`), or None for any other card (or a broken recipe, which
    the server refuses with its reason when the model is used)."""
    from core import RequestError
    from core.fewstep import FewStepRecipe

    try:
        return FewStepRecipe.from_card(card or {})
    except RequestError:
        return None


def checkpoint_label(item: dict) -> str:
    """A registered checkpoint in the model list: a distilled one by its card's label
    ("mini-distilled — 2-2-1, 5 steps, guidance baked in, DMD-PT*"), others by kind and base."""
    card = item.get("card") or {}
    if card.get("trained_for") == "few-step":
        recipe = few_step_recipe(card)
        label = card.get("label") or (recipe.describe() if recipe else "few-step student")
        return f"{item['name']} — {label}"
    return f"{item['name']} ({item['kind']} over {item['base']})"


def recipe_lock(card: dict | None, name: str) -> dict[str, str] | None:
    """What Generate locks for a distilled checkpoint: its recipe's ``schedule``, ``guidance``
    (as the box shows it), ``mode`` and a ``note`` saying why; None for any other model."""
    recipe = few_step_recipe(card)
    if recipe is None:
        return None
    return {"schedule": recipe.schedule, "guidance": f"{recipe.guidance:g}", "mode": "pyramidal",
            "note": f"🔒 **{name}** is a few-step student trained for {recipe.describe()}: it runs only that "
                    f"recipe (schedule `{recipe.schedule}`, guidance {recipe.guidance:g}), so the schedule, "
                    "guidance and mode are locked. Choose another model to change them."}


# ---------------------------------------------------------------------------- numbers
def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "–"
    if s < 60:
        return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"
    m, s = divmod(int(round(s)), 60)
    return f"{m} min {s:02d} s"


def fmt_tflops(t: float | None) -> str:
    if t is None:
        return "–"
    if t >= 1:
        return f"{t:,.1f}"
    return f"{t:.3g}"


def _parse_time(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value.rstrip("Z")) if value else None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def eta_seconds(row: dict, now: dt.datetime | None = None) -> float | None:
    """Time left from the running time so far and the fraction done (None: unknown yet).

    The worker's fraction covers decoding and writing the video too (their estimated share,
    :func:`workers.progress.estimate_shares`), so the time left stays above 0 until the end; a
    running row at 1 (an estimate that ran out) has an unknown time left, not 0."""
    started = _parse_time(row.get("started_at"))
    fraction = row.get("fraction") or 0.0
    if row.get("status") != "running" or started is None or not 0.02 < fraction < 1.0:
        return None
    elapsed = ((now or _now()) - started).total_seconds()
    return max(elapsed * (1 - fraction) / fraction, 0.0)


def speedup(row: dict, original: dict | None) -> dict[str, float | None]:
    """Speed-up of ``row`` against ``original`` in denoising seconds, total seconds and TFLOPs."""
    def ratio(a, b):
        return b / a if a and b and a > 0 else None

    if not original:
        return {"denoise": None, "total": None, "tflops": None}
    s, o = (row.get("report") or {}).get("seconds", {}), (original.get("report") or {}).get("seconds", {})
    return {
        "denoise": ratio(s.get("denoise"), o.get("denoise")),
        "total": ratio(s.get("total"), o.get("total")),
        "tflops": ratio(row.get("tflops"), original.get("tflops")),
    }


def fmt_ratio(r: float | None) -> str:
    return "–" if r is None or not math.isfinite(r) else f"{r:.2f}x"


def model_label(row: dict) -> str:
    return f"{row['model']} + {row['checkpoint_name']}" if row.get("checkpoint_name") else row["model"]


def run_title(row: dict) -> str:
    prompt = row["prompt"] if len(row["prompt"]) <= 40 else row["prompt"][:39] + "…"
    return f"#{row['id']} {row['mode']} {row['schedule']} · {prompt}"


# ---------------------------------------------------------------------------- HTML pieces
def status_badge(status: str) -> str:
    return f'<span class="pw-badge pw-{esc(status)}">{esc(status)}</span>'


def progress_html(row: dict, label: str | None = None) -> str:
    """A progress card: status, stage, step, fraction bar and time left."""
    status = row["status"]
    frac = 1.0 if status == "done" else float(row.get("fraction") or 0.0)
    parts = [f"<b>{esc(label or run_title(row))}</b> {status_badge(status)}"]
    detail = ""
    if status == "queued":
        detail = "waiting for a worker…"
    elif status == "running":
        phase = row.get("phase")
        if phase == "loading" or (phase is None and row.get("stage") is None):
            detail = "loading the model…"
        else:
            if phase in ("decoding", "writing video"):
                detail = f"{phase}… · {frac:.0%}"
            else:  # denoising
                detail = (f"stage {row['stage'] + 1}/{row.get('stages') or '?'} · "
                          f"step {row.get('step') or 0}/{row.get('steps') or '?'} · {frac:.0%}")
            eta = eta_seconds(row)
            if eta is not None:
                detail += f" · about {fmt_seconds(eta)} left"
    elif status == "done":
        detail = f"finished in {fmt_seconds(row.get('total_seconds'))}"
    elif status == "failed":
        detail = esc(row.get("error") or "failed")
    elif status == "cancelled":
        detail = "cancelled"
    return (
        f'<div class="pw-progress" data-run="{row["id"]}" data-status="{esc(status)}">'
        f'<div class="pw-progress-head">{" ".join(parts)}</div>'
        f'<div class="pw-bar"><div style="width:{frac * 100:.1f}%"></div></div>'
        f'<div class="pw-progress-detail">{detail}</div></div>'
    )


def video_html(src: str, label: str, group: str | None = None, note: str = "") -> str:
    """A looping, muted, autoplaying video (a ``data-sync`` group plays in step)."""
    sync = f' data-sync="{esc(group)}"' if group else ""
    return (
        f'<figure class="pw-video"><video src="{esc(src)}" autoplay muted loop playsinline controls'
        f'{sync}></video><figcaption>{esc(label)}{(" · " + esc(note)) if note else ""}'
        f"</figcaption></figure>"
    )


def videos_html(rows: list[dict], group: str) -> str:
    figs = [video_html(f"/api/runs/{r['id']}/video?v={esc(r.get('finished_at') or '')}",
                       f"{r['mode']} {r['schedule']}", group, f"run #{r['id']}")
            for r in rows]
    play = (f'<button class="pw-sync-play" data-sync-target="{esc(group)}">⟲ play both from the start'
            "</button>" if len(rows) > 1 else "")
    return f'<div class="pw-videos">{"".join(figs)}</div>{play}'


def still_html(row: dict) -> str:
    """A finished run's small still (served by ``/api/runs/{id}/still``), or "" without one."""
    if row.get("status") != "done" or not row.get("still_path"):
        return ""
    return (f'<img class="pw-still" src="/api/runs/{row["id"]}/still?v={esc(row.get("finished_at") or "")}" '
            f'alt="still of run #{row["id"]}" loading="lazy">')


def preview_html(run_id: int, stamp: str = "") -> str:
    return (
        '<div class="pw-preview">'
        + video_html(f"/api/runs/{run_id}/preview?v={esc(stamp)}",
                     "low-resolution preview (lowest stage)", None)
        + "<p>The lowest stage already fixes the layout and motion: this preview costs a "
          "fraction of the full video.</p></div>"
    )


#: How each decoder is named on the page.
DECODER_LABELS = {"full": "the full decoder (VAE)", "tiny": "the tiny decoder", "both": "both decoders (full and tiny)"}


def decoder_note(row: dict) -> str:
    """Which decoder made (or makes) the run's video: "decoded with the tiny decoder"."""
    decoder = row.get("decoder") or "full"
    verb = "decoded" if row.get("status") == "done" else "decodes"
    return f"{verb} with {DECODER_LABELS.get(decoder, decoder)}"


def run_card(row: dict, original: dict | None = None) -> str:
    """Markdown card: seed, plan, seconds per stage, TFLOPs, memory, speed-up."""
    report = row.get("report") or {}
    seconds = report.get("seconds", {})
    stages = seconds.get("stages") or []
    tf_stages = report.get("tflops_per_stage") or []
    lines = [
        f"**Run #{row['id']}** · {status_badge(row['status'])} · model `{model_label(row)}` · "
        f"{row['mode']} `{row['schedule']}` · seed `{row['seed']}` · "
        f"{row['frames']} x {row['height']} x {row['width']} · guidance "
        f"{', '.join(f'{g:g}' for g in row.get('guidance') or [])}"
        + (f" ({row['guidance_source']})" if row.get("guidance_source") else "")
        + f" · {decoder_note(row)}",
        "",
        f"> {row['prompt']}",
        "",
    ]
    if row["status"] == "done":
        lines += [
            "| | seconds | TFLOPs |", "|---|---:|---:|",
            f"| encode prompt | {fmt_seconds(seconds.get('encode'))} | |",
        ]
        for i, s in enumerate(stages):
            tf = fmt_tflops(tf_stages[i]) if i < len(tf_stages) else "–"
            lines.append(f"| stage {i + 1} | {fmt_seconds(s)} | {tf} |")
        tiny_label = "decode (tiny decoder)" if (row.get("decoder") or "full") == "tiny" else "decode"
        lines.append(f"| {tiny_label} | {fmt_seconds(seconds.get('decode'))} | |")
        if seconds.get("decode_tiny") is not None:
            lines.append(f"| decode (tiny decoder) | {fmt_seconds(seconds['decode_tiny'])} | |")
        lines += [
            f"| **total** | **{fmt_seconds(seconds.get('total'))}** | **{fmt_tflops(row.get('tflops'))}** |",
            "",
            f"Model load {fmt_seconds(row.get('load_seconds'))} · peak memory "
            f"{row.get('peak_memory_mb') or 0:,.0f} MB",
        ]
        if original and original.get("status") == "done" and original["id"] != row["id"]:
            sp = speedup(row, original)
            lines += ["", f"**Speed-up against the original (run #{original['id']}):** "
                      f"{fmt_ratio(sp['tflops'])} fewer TFLOPs · {fmt_ratio(sp['denoise'])} faster "
                      f"denoising · {fmt_ratio(sp['total'])} faster in total"]
    elif row.get("error"):
        lines.append(f"**Error:** {row['error']}")
    return "\n".join(lines)


def compare_table(a: dict, b: dict) -> list[list[str]]:
    """Rows of the comparison table: phase/stage seconds, TFLOPs, memory, speed-up (b vs a)."""
    ra, rb = a.get("report") or {}, b.get("report") or {}
    sa, sb = ra.get("seconds", {}), rb.get("seconds", {})

    def ratio(x, y):  # how many times ``b`` is cheaper than ``a``
        return fmt_ratio(x / y) if x and y else "–"

    rows = [["run", f"#{a['id']} {a['mode']} {a['schedule']}", f"#{b['id']} {b['mode']} {b['schedule']}", ""]]
    rows.append(["model load (s)", _n(a.get("load_seconds")), _n(b.get("load_seconds")), ""])
    for phase in ("encode", "denoise", "decode", "total"):
        rows.append([f"{phase} (s)", _n(sa.get(phase)), _n(sb.get(phase)), ratio(sa.get(phase), sb.get(phase))])
    st_a, st_b = sa.get("stages") or [], sb.get("stages") or []
    for i in range(max(len(st_a), len(st_b))):
        rows.append([f"stage {i + 1} (s)", _n(st_a[i] if i < len(st_a) else None),
                     _n(st_b[i] if i < len(st_b) else None), ""])
    rows.append(["TFLOPs", fmt_tflops(a.get("tflops")), fmt_tflops(b.get("tflops")),
                 ratio(a.get("tflops"), b.get("tflops"))])
    rows.append(["peak memory (MB)", _n(a.get("peak_memory_mb"), 0), _n(b.get("peak_memory_mb"), 0),
                 ratio(a.get("peak_memory_mb"), b.get("peak_memory_mb"))])
    return rows


def _n(v: float | None, digits: int = 2) -> str:
    return "–" if v is None else f"{v:,.{digits}f}"


# ---------------------------------------------------------------------------- tables and summaries
JOB_SUMMARY_KEYS = ("data", "steps", "schedule", "method", "student_plan", "teacher", "batch", "lr", "lora_rank",
                    "out")
#: How each kind of finetune job is named on the page.
JOB_KINDS = {"pyramidal": "pyramidal finetune", "distill": "distillation"}


def fmt_created(value: str | None) -> str:
    """An ISO timestamp as ``YYYY-MM-DD HH:MM:SS`` (the tables' "created (UTC)" column)."""
    return (value or "")[:19].replace("T", " ")


def history_row(r: dict) -> list[Any]:
    """One row of the History table (the still column is HTML)."""
    return [
        r["id"], still_html(r), r["status"], model_label(r), r["mode"], r["schedule"],
        size_label(r["frames"], r["height"], r["width"]), r["seed"], fmt_created(r["created_at"]),
        "" if r.get("total_seconds") is None else f"{r['total_seconds']:.1f}",
        r["prompt"] if len(r["prompt"]) <= 60 else r["prompt"][:59] + "…",
        r.get("decoder") or "full",
    ]


def job_kind(job: dict) -> str:
    """The job's kind, ``"pyramidal"`` or ``"distill"`` (rows from before kinds are pyramidal)."""
    return (job.get("config") or {}).get("kind") or "pyramidal"


def _last_loss(job: dict) -> str:
    last = (job.get("losses") or [None])[-1]
    if not isinstance(last, dict):
        return ""
    if "loss" in last:
        return f"{last['loss']:.4g}"
    parts = [f"{tag} {last[key]:.4g}" for tag, key in (("G", "generator_loss"), ("C", "critic_loss"))
             if isinstance(last.get(key), (int, float))]
    return " · ".join(parts)


def job_row(j: dict) -> list[Any]:
    """One row of the Admin tab's finetune jobs table."""
    return [j["id"], j["name"], JOB_KINDS.get(job_kind(j), job_kind(j)), j["base"], j["status"],
            f"{j.get('step') or 0}/{j.get('steps') or '?'}", f"{(j.get('fraction') or 0):.0%}", _last_loss(j),
            fmt_created(j["created_at"])]


def checkpoint_row(c: dict) -> list[Any]:
    """One row of the Admin tab's checkpoints table."""
    return [c["id"], c["name"], c["kind"], c["base"], c["path"], fmt_created(c["created_at"])]


def loss_points(job: dict) -> list[dict]:
    """The job's recorded ``{"step", "loss"}`` points (anything else in the list is skipped)."""
    return [p for p in job.get("losses") or [] if isinstance(p, dict) and "step" in p and "loss" in p]


#: The curves of a job's loss plot: (series name, key in its loss points).
LOSS_SERIES = {"pyramidal": (("loss", "loss"),),
               "distill": (("generator", "generator_loss"), ("critic", "critic_loss"))}


def loss_series(job: dict) -> list[dict]:
    """The job's loss plot as rows ``{"step", "loss", "series"}``: a pyramidal finetune's loss; a
    distillation's generator and critic loss (a point without a finite value is skipped)."""
    rows = []
    for series, key in LOSS_SERIES.get(job_kind(job), LOSS_SERIES["pyramidal"]):
        for p in job.get("losses") or []:
            value = p.get(key) if isinstance(p, dict) else None
            if isinstance(p, dict) and "step" in p and isinstance(value, (int, float)) and math.isfinite(value):
                rows.append({"step": p["step"], "loss": value, "series": series})
    return rows


def job_detail(job: dict) -> str:
    """Markdown about one finetune job: its kind, status, progress, error, the main settings, its checkpoint."""
    kind = job_kind(job)
    detail = (f"**Job #{job['id']}** `{job['name']}` ({JOB_KINDS.get(kind, kind)}) over `{job['base']}` · "
              f"{status_badge(job['status'])} · step {job.get('step') or 0}/{job.get('steps') or '?'} "
              f"({(job.get('fraction') or 0):.0%})")
    if job.get("error"):
        detail += f"\n\n**Error:** {job['error']}"
    config = job.get("config") or {}
    shown = [f"{k} `{config[k]}`" for k in JOB_SUMMARY_KEYS if config.get(k) not in (None, "")]
    if shown:
        detail += "\n\n" + " · ".join(shown)
    if job.get("checkpoint_id"):
        label = (job.get("report") or {}).get("label")
        detail += (f"\n\nRegistered as checkpoint #{job['checkpoint_id']}" + (f" ({label})" if label else "")
                   + ": pick it as the model in Generate.")
    return detail


def comparison_summary(quality: dict, speed: dict) -> str:
    """Markdown under the comparison table: how close B is to A (PSNR/SSIM) and B's speed-up."""
    if quality["comparable"]:
        psnr = ("identical (∞ dB)" if quality["psnr_mean"] == float("inf")
                else f"{quality['psnr_mean']:.2f} dB")
        text = (f"**How close B is to A** over {quality['frames']} frames: PSNR **{psnr}**, "
                f"SSIM **{quality['ssim_mean']:.4f}** (1.0 = identical).")
    else:
        text = f"**How close:** {quality['reason']}."
    return text + (f"\n\n**B against A:** {fmt_ratio(speed['tflops'])} fewer TFLOPs, "
                   f"{fmt_ratio(speed['denoise'])} faster denoising, {fmt_ratio(speed['total'])} faster in total.")


def decode_both_html(row: dict, group: str) -> str:
    """A run decoded both ways: the full decode and the tiny one side by side, playing in step,
    each captioned with its decode seconds."""
    seconds = (row.get("report") or {}).get("seconds", {})
    stamp = esc(row.get("finished_at") or "")
    figs = [video_html(f"/api/runs/{row['id']}/video?v={stamp}", "full decoder (VAE)", group,
                       f"decode {fmt_seconds(seconds.get('decode'))}"),
            video_html(f"/api/runs/{row['id']}/video?decoder=tiny&v={stamp}", "tiny decoder", group,
                       f"decode {fmt_seconds(seconds.get('decode_tiny'))}")]
    return (f'<div class="pw-videos" id="cmp-both-videos">{"".join(figs)}</div>'
            f'<button class="pw-sync-play" data-sync-target="{esc(group)}">⟲ play both from the start</button>')


def decode_both_table(row: dict) -> list[list[str]]:
    """Rows of the Compare table for a run decoded both ways: decode seconds, full against tiny."""
    report = row.get("report") or {}
    seconds = report.get("seconds", {})
    full, tiny = seconds.get("decode"), seconds.get("decode_tiny")
    return [["decode (s)", _n(full), _n(tiny), fmt_ratio(full / tiny) if full and tiny else "–"],
            ["PSNR against the full decode (dB)", "–", _n(report.get("decode_psnr_db")), ""]]


def decode_both_summary(row: dict) -> str:
    """Markdown under the table: how close the tiny decode is to the full one, and how much faster."""
    report = row.get("report") or {}
    seconds = report.get("seconds", {})
    full, tiny = seconds.get("decode"), seconds.get("decode_tiny")
    psnr = report.get("decode_psnr_db")
    speed = f" · the tiny decoder decoded **{fmt_ratio(full / tiny)}** faster" if full and tiny else ""
    return (f"**Run #{row['id']} decoded both ways** (same latents): PSNR of the tiny decode against "
            f"the full one **{'–' if psnr is None else f'{psnr:.2f} dB'}**{speed}.")


def watch_view(rows: list[dict], comparison: bool, previews: set[int], group: str) -> dict[str, Any]:
    """What the Generate tab shows for the runs it follows: ``progress``, ``preview``, ``videos``
    and ``card`` (markdown), and ``finished``. ``comparison``: ``rows`` are the original and the
    pyramid of one comparison; ``previews``: ids of the runs whose low-resolution preview exists."""
    pair = comparison and len(rows) == 2
    labels = ["original", "pyramidal"] if pair else [None] * len(rows)
    progress = "".join(progress_html(r, f"{lab}: {run_title(r)}" if lab else None)
                       for r, lab in zip(rows, labels))
    preview = ""
    for r in rows:
        if r["mode"] == "pyramidal" and r["status"] in ("running", "done") and r["id"] in previews:
            preview = preview_html(r["id"], str(r["stage"] or 0))
    finished = all(r["status"] in FINAL for r in rows)
    done = [r for r in rows if r["status"] == "done"]
    videos, card = "", ""
    if finished:
        if done:
            videos = videos_html(done, group=group)
        original = rows[0] if pair else None
        card = run_card(rows[-1], original)
        if original is not None and original["status"] == "done":
            card += "\n\n" + run_card(original).split("\n\n|", 1)[0]
    return {"progress": progress, "preview": preview, "videos": videos, "card": card, "finished": finished}
