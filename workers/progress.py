"""Heartbeat and throttled progress for one running item (a run or a finetune job).

* :class:`Heartbeat` is a thread that refreshes ``heartbeat_at`` every few seconds while the
  item runs, so the reaper can tell a slow step from a dead worker. It also notices a cancel
  request or that the item was taken away (reaped) and raises the matching flag.
* :class:`ProgressReporter` turns the sampler's per-step callback into at most a few writes a
  second, but always writes stage boundaries and phase changes; its return value is the
  sampler's "stop?".
* :class:`PhaseShares` splits a run's fraction between denoising, decoding and writing the
  video, estimated by :func:`estimate_shares` from the model's last finished run or from FLOPs.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from db import queue
from db.models import FinetuneJob, Run

log = logging.getLogger(__name__)

#: Set when the worker process is asked to shut down: running items stop at the next step
#: and go back to the queue.
SHUTDOWN = threading.Event()


class Heartbeat:
    """Context manager: a daemon thread beating for ``(model, item_id, attempt)``."""

    def __init__(self, model: type[Run] | type[FinetuneJob], item_id: int, attempt: int, interval: float):
        self.model, self.item_id, self.attempt, self.interval = model, item_id, attempt, interval
        self.cancel_requested = threading.Event()
        self.lost = threading.Event()  # no longer ours: reaped, deleted or finished elsewhere
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name=f"heartbeat-{model.__tablename__}-{item_id}", daemon=True
        )

    def beat(self, **progress: Any) -> None:
        """Write the heartbeat now (with optional progress columns) and update the flags."""
        owned, cancel = queue.heartbeat(self.model, self.item_id, self.attempt, **progress)
        if not owned:
            self.lost.set()
        if cancel:
            self.cancel_requested.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except Exception:  # a locked or unreachable database: try again next beat
                log.exception("heartbeat for %s %s failed", self.model.__tablename__, self.item_id)
            if self.lost.is_set():
                return

    @property
    def should_stop(self) -> bool:
        return self.cancel_requested.is_set() or self.lost.is_set() or SHUTDOWN.is_set()

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


#: What a running run is doing, in order (``Run.phase``).
PHASES = ("loading", "denoising", "decoding", "writing video")


@dataclass(frozen=True)
class PhaseShares:
    """Shares (summing to 1) of a run's working time spent denoising, decoding and writing the
    video, and where the estimate comes from. Loading and the prompt encode come before the
    first step and count as 0: the fraction is of the work the estimate can see."""

    denoising: float
    decoding: float
    writing: float
    source: str

    @classmethod
    def from_costs(cls, denoising: float, decoding: float, writing: float, source: str) -> "PhaseShares | None":
        """Shares from costs in any one unit (seconds, TFLOPs); None when they make no sense."""
        costs = (denoising, decoding, writing)
        if not all(isinstance(c, (int, float)) and math.isfinite(c) and c >= 0 for c in costs):
            return None
        total = sum(costs)
        if total <= 0 or denoising <= 0:
            return None
        return cls(denoising / total, decoding / total, writing / total, source)

    def overall(self, phase: str, fraction: float = 0.0) -> float:
        """The run's fraction done at ``fraction`` (0..1) of ``phase``."""
        fraction = min(max(fraction, 0.0), 1.0)
        before = {"denoising": 0.0, "decoding": self.denoising,
                  "writing video": self.denoising + self.decoding}
        share = {"denoising": self.denoising, "decoding": self.decoding, "writing video": self.writing}
        if phase not in before:  # loading
            return 0.0
        return min(before[phase] + share[phase] * fraction, 1.0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def estimate_shares(
    request: Any,
    previous: dict[str, Any] | None,
    estimate_tflops: Callable[..., dict[str, float]] | None = None,
) -> PhaseShares | None:
    """How ``request``'s run will split its time between denoising, decoding and writing.

    * From ``previous``, the model's last finished run (same shape if any): its measured
      ``report["seconds"]`` of denoise, decode and write on this installation. Decoding and
      writing grow with the video's pixels (frames x height x width), so they are scaled by
      the pixel ratio; denoising grows with its FLOPs, so it is scaled by this plan's TFLOPs over
      that run's (``estimate_tflops``, e.g. :meth:`core.PyramidalWanPipeline.estimate_tflops`).
    * With no finished run yet: the FLOP ratio of decoding to denoising (the VAE's measured on a
      small latent), assuming both run at the same FLOP rate; writing (not measurable in FLOPs,
      and small) counts as 0 until a run has measured it.
    * None (the fraction is that of the denoising steps, as the sampler gives it) when neither
      is available.
    """
    seconds = ((previous or {}).get("report") or {}).get("seconds") or {}
    if seconds.get("denoise") and seconds.get("decode") is not None:
        pixels = request.frames * request.height * request.width
        scale = pixels / max(previous["frames"] * previous["height"] * previous["width"], 1)
        denoise = float(seconds["denoise"])
        if estimate_tflops is not None and previous.get("tflops"):
            denoise *= estimate_tflops(request, decode=False)["denoise"] / previous["tflops"]
        return PhaseShares.from_costs(denoise, float(seconds["decode"]) * scale,
                                      float(seconds.get("write") or 0.0) * scale,
                                      f"measured seconds of run #{previous['id']}")
    if estimate_tflops is not None:
        tflops = estimate_tflops(request)
        return PhaseShares.from_costs(tflops["denoise"], tflops["decode"], 0.0, "FLOPs")
    return None


class ProgressReporter:
    """The sampler callback for a run: throttled writes, stage boundaries always written.

    ``on_preview`` (optional) receives the low-resolution preview frames when they come.
    Step dicts (``"phase": "denoising"``, the default) carry the fraction of the denoising
    steps; other phases (``{"phase": "decoding"}``) are written at once, with the run's fraction
    at their start. ``shares`` maps both to the whole run's fraction (without it the denoising
    fraction is written as it comes and phase changes leave the fraction alone).
    Returns True from :meth:`__call__` when the sampler should stop.
    """

    def __init__(
        self,
        heartbeat: Heartbeat,
        min_interval: float,
        on_preview: Callable[[Any], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        shares: PhaseShares | None = None,
        phase: str | None = None,
    ):
        self.heartbeat = heartbeat
        self.min_interval = min_interval
        self.on_preview = on_preview
        self.clock = clock
        self.shares = shares
        self.phase = phase  # the phase last written
        self.writes = 0
        self._last_write = float("-inf")
        self._last_stage: int | None = None

    def __call__(self, info: dict[str, Any]) -> bool:
        if info.get("preview") is not None and self.on_preview is not None:
            try:
                self.on_preview(info["preview"])
            except Exception:  # a preview is a nicety: never fail the run for it
                log.exception("could not save the preview")
        phase = info.get("phase", "denoising")
        if phase != "denoising":
            self.set_phase(phase)
            return self.heartbeat.should_stop
        stage, steps, step = info.get("stage", 0), info.get("steps"), info.get("step")
        boundary = phase != self.phase or stage != self._last_stage or (steps is not None and step == steps)
        now = self.clock()
        if boundary or now - self._last_write >= self.min_interval:
            self.write(info)
            self._last_write = now
        self._last_stage = stage
        return self.heartbeat.should_stop

    def overall(self, phase: str, fraction: float) -> float | None:
        """The run's fraction at ``fraction`` of ``phase`` (None: unknown, leave it)."""
        if self.shares is not None:
            return self.shares.overall(phase, fraction)
        return min(max(fraction, 0.0), 1.0) if phase == "denoising" else None

    def set_phase(self, phase: str) -> None:
        """Write ``phase`` now, with the run's fraction at its start (never throttled away)."""
        if phase == self.phase:
            return
        progress: dict[str, Any] = {"phase": phase}
        fraction = self.overall(phase, 0.0)
        if fraction is not None:
            progress["fraction"] = fraction
        if self._beat(progress):  # a failed write is tried again at the next event
            self.phase = phase

    def write(self, info: dict[str, Any]) -> None:
        if self._beat({
            "phase": "denoising",
            "stage": info.get("stage"),
            "stages": info.get("stages"),
            "step": info.get("step"),
            "steps": info.get("steps"),
            "fraction": float(self.overall("denoising", float(info.get("fraction", 0.0)))),
        }):
            self.phase = "denoising"

    def _beat(self, progress: dict[str, Any]) -> bool:
        try:
            self.heartbeat.beat(**progress)
            self.writes += 1
            return True
        except Exception:
            log.exception("progress write for run %s failed", self.heartbeat.item_id)
            return False
