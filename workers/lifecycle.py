"""What a worker process does around its tasks (Celery signals).

* ready: create the schema, start importing the model code (and loading ``PWAN_PRELOAD``
  presets) in the background, announce itself in ``$PWAN_DATA_DIR/workers/<node>.<pid>.json``,
  re-send messages for queued runs, start the reaper thread, and (embedded workers) exit when
  the parent process is gone.
* shutting down (SIGTERM): the running run stops at its next step and goes back to the queue.
* shutdown: remove the announcement, stop the reaper.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from pathlib import Path

from celery.signals import worker_ready, worker_shutdown, worker_shutting_down

from db.models import utcnow
from db.session import init_db
from settings import get_settings
from workers import config
from workers.progress import SHUTDOWN

log = logging.getLogger(__name__)

_state: dict = {}


def ready_file(hostname: str, pid: int) -> Path:
    return config.workers_dir() / f"{hostname}.{pid}.json"


@worker_ready.connect
def _on_ready(sender=None, **_kwargs) -> None:
    from workers.reaper import Reaper, recover_queue
    from workers.tasks import worker_id

    hostname = getattr(sender, "hostname", None) or "worker"
    init_db()
    try:
        recover_queue()
    except Exception:
        log.exception("could not re-send messages for queued runs")
    _state["reaper"] = Reaper().start()
    parent = get_settings().exit_with_parent
    if parent is not None:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    threading.Thread(target=_warm_up, name="pwan-warm-up", daemon=True).start()
    path = ready_file(hostname, os.getpid())
    info = {"worker": worker_id(hostname), "pid": os.getpid(), "ready_at": utcnow().isoformat()}
    path.write_text(json.dumps(info))
    _state["ready_file"] = path
    log.info("worker %s ready", info["worker"])


@worker_shutting_down.connect
def _on_shutting_down(**_kwargs) -> None:
    SHUTDOWN.set()


@worker_shutdown.connect
def _on_shutdown(**_kwargs) -> None:
    reaper = _state.pop("reaper", None)
    if reaper is not None:
        reaper.stop()
    path = _state.pop("ready_file", None)
    if path is not None:
        path.unlink(missing_ok=True)


def _warm_up() -> None:
    """Import the model code now, and load the presets named in ``PWAN_PRELOAD`` (comma
    separated), so the first run does not pay for them."""
    try:
        import core  # noqa: F401  (torch, diffusers: seconds)

        from workers.models import model_cache

        for preset in get_settings().preload:
            model_cache().get(preset)
            log.info("preloaded model %s", preset)
    except Exception:  # the run that needs it will report the error properly
        log.exception("warm-up failed")


def _watch_parent(parent_pid: int) -> None:
    """Embedded workers: when the app that started us is gone, shut down (warm)."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent_pid:
            log.warning("parent process %s is gone: shutting down", parent_pid)
            os.kill(os.getpid(), signal.SIGTERM)
            return
