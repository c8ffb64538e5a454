"""Two finished runs side by side: their costs, how close their videos are, a labelled mp4."""
from __future__ import annotations

import threading
from pathlib import Path

import service
from ui import metrics, views

_cache: dict[tuple, dict] = {}
_lock = threading.Lock()


def _done_run(run_id: int) -> dict:
    row = service.get_run(run_id)
    if row["status"] != "done" or not row.get("output_path") or not Path(row["output_path"]).is_file():
        raise service.ConflictError(f"Run {run_id} is {row['status']}: only finished runs with a video can be compared.")
    return row


def _key(a: dict, b: dict) -> tuple:
    return (a["id"], a.get("finished_at"), b["id"], b.get("finished_at"))


def compare_runs(a_id: int, b_id: int) -> dict:
    """Costs of both runs, speed-up of ``b`` against ``a``, and PSNR/SSIM of their videos."""
    from core.video import read_frames

    a, b = _done_run(a_id), _done_run(b_id)
    key = _key(a, b)
    with _lock:
        cached = _cache.get(key)
    if cached is None:
        va, vb = read_frames(a["output_path"]), read_frames(b["output_path"])
        if va.shape != vb.shape:
            quality = {"comparable": False,
                       "reason": f"the videos differ in shape ({'x'.join(map(str, va.shape[:3]))} and "
                                 f"{'x'.join(map(str, vb.shape[:3]))}): PSNR and SSIM need the same shape"}
        else:
            quality = {"comparable": True, **metrics.compare_videos(va, vb)}
        cached = {"a": a["id"], "b": b["id"], "quality": quality,
                  "speedup": views.speedup(b, a), "table": views.compare_table(a, b)}
        with _lock:
            _cache[key] = cached
    return {**cached, "runs": [a, b]}


def side_by_side(a_id: int, b_id: int) -> str:
    """The path of a labelled side-by-side mp4 of the two runs (written once, then reused)."""
    from core.video import read_frames, write_side_by_side

    a, b = _done_run(a_id), _done_run(b_id)
    path = service.side_by_side_path(a["id"], b["id"])
    if not path.is_file() or path.stat().st_mtime < max(Path(r["output_path"]).stat().st_mtime for r in (a, b)):
        videos = [read_frames(a["output_path"]), read_frames(b["output_path"])]
        labels = [f"#{r['id']} {r['mode']} {r['schedule']}" + (f" ({r['tflops']:.3g} TFLOPs)" if r.get("tflops") else "")
                  for r in (a, b)]
        tmp = path.with_name(f".{path.stem}.{threading.get_ident()}.mp4")
        write_side_by_side(videos, labels, tmp, fps=16)
        tmp.replace(path)
    return str(path)
