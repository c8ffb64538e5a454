"""Heartbeat and throttled progress for one running item (a run or a finetune job).

* :class:`Heartbeat` is a thread that refreshes ``heartbeat_at`` every few seconds while the
  item runs, so the reaper can tell a slow step from a dead worker. It also notices a cancel
  request or that the item was taken away (reaped) and raises the matching flag.
* :class:`ProgressReporter` turns the sampler's per-step callback into at most a few writes a
  second, but always writes stage boundaries; its return value is the sampler's "stop?".
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
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


class ProgressReporter:
    """The sampler callback for a run: throttled writes, stage boundaries always written.

    ``on_preview`` (optional) receives the low-resolution preview frames when they come.
    Returns True from :meth:`__call__` when the sampler should stop.
    """

    def __init__(
        self,
        heartbeat: Heartbeat,
        min_interval: float,
        on_preview: Callable[[Any], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.heartbeat = heartbeat
        self.min_interval = min_interval
        self.on_preview = on_preview
        self.clock = clock
        self.writes = 0
        self._last_write = float("-inf")
        self._last_stage: int | None = None

    def __call__(self, info: dict[str, Any]) -> bool:
        if info.get("preview") is not None and self.on_preview is not None:
            try:
                self.on_preview(info["preview"])
            except Exception:  # a preview is a nicety: never fail the run for it
                log.exception("could not save the preview")
        stage, steps, step = info.get("stage", 0), info.get("steps"), info.get("step")
        boundary = stage != self._last_stage or (steps is not None and step == steps)
        now = self.clock()
        if boundary or now - self._last_write >= self.min_interval:
            self.write(info)
            self._last_write = now
        self._last_stage = stage
        return self.heartbeat.should_stop

    def write(self, info: dict[str, Any]) -> None:
        progress = {
            "stage": info.get("stage"),
            "stages": info.get("stages"),
            "step": info.get("step"),
            "steps": info.get("steps"),
            "fraction": float(min(max(info.get("fraction", 0.0), 0.0), 1.0)),
        }
        try:
            self.heartbeat.beat(**progress)
            self.writes += 1
        except Exception:
            log.exception("progress write for run %s failed", self.heartbeat.item_id)
