"""One worker process started by the app (``python app.py`` without ``--no-worker``).

    worker = EmbeddedWorker()          # queues infer and train, default broker
    worker.start()                     # spawns: python -m celery -A workers worker --pool solo ...
    worker.supervise()                 # thread: restart it if it dies (with back-off)
    ...
    worker.stop()                      # SIGTERM: the running run goes back to the queue; exit

When the process dies (crash, out of memory, ``kill -9``), the supervisor releases the run it
held at once (re-queued once, then failed: the same rule as the reaper) and starts a new
process. If the app itself dies, the worker notices that its parent is gone and shuts down.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from settings import read_settings
from workers import config

log = logging.getLogger(__name__)

_REPO_ROOT = Path(__file__).resolve().parent.parent


class EmbeddedWorker:
    """A supervised ``celery worker`` child process (solo pool: one model, one run at a time)."""

    def __init__(
        self,
        queues: Sequence[str] = (config.INFER_QUEUE, config.TRAIN_QUEUE),
        *,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        loglevel: str = "info",
        log_path: str | Path | None = None,
        min_restart_delay: float = 1.0,
        max_restart_delay: float = 60.0,
    ):
        self.queues = list(queues)
        self.nodename = f"{name or 'embedded-' + uuid.uuid4().hex[:8]}@{socket.gethostname()}"
        self.env = dict(os.environ if env is None else env)
        self.loglevel = loglevel
        self.log_path = Path(log_path) if log_path else None
        self.min_restart_delay, self.max_restart_delay = min_restart_delay, max_restart_delay
        self.restarts = 0
        self._proc: subprocess.Popen | None = None
        self._log_file = None
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._next_start = 0.0
        self._delay = min_restart_delay
        self._started_at = 0.0
        self._exit_handled = True

    # ------------------------------------------------------------------ process
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def worker_id(self) -> str | None:
        """How the running process appears in ``runs.worker``."""
        return f"{self.nodename}:{self.pid}" if self.pid is not None else None

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "celery", "-A", "workers", "worker",
            "-Q", ",".join(self.queues), "--pool", "solo", "--concurrency", "1",
            "-n", self.nodename, "--without-gossip", "--without-mingle", "--without-heartbeat",
            "-l", self.loglevel,
        ]  # fmt: skip

    def _data_dir(self) -> Path:
        path = read_settings(self.env).data_dir  # the child's data folder, from its environment
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _ready_file(self) -> Path:
        return self._data_dir() / "workers" / f"{self.nodename}.{self.pid}.json"

    def start(self) -> None:
        """Start the process (no-op while one is alive)."""
        with self._lock:
            if self.alive:
                return
            self._stopping.clear()
            env = dict(self.env)
            env["PWAN_EXIT_WITH_PARENT"] = str(os.getpid())
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(_REPO_ROOT), env.get("PYTHONPATH", "")) if p
            )
            log_path = self.log_path or self._data_dir() / "workers" / "embedded.log"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            if self._log_file is None or self._log_file.closed:
                self._log_file = open(log_path, "ab", buffering=0)
            self._proc = subprocess.Popen(
                self.command(), cwd=_REPO_ROOT, env=env, stdin=subprocess.DEVNULL,
                stdout=self._log_file, stderr=subprocess.STDOUT, start_new_session=True,
            )
            self._started_at = time.monotonic()
            self._exit_handled = False
            log.info("embedded worker %s started (pid %s)", self.nodename, self.pid)

    def wait_ready(self, timeout: float = 120.0) -> bool:
        """Wait until the worker announced itself (consuming). False on timeout, or when the
        process exited and no supervisor will restart it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.alive:
                if self._ready_file().is_file():
                    return True
            elif self._supervisor is None or not self._supervisor.is_alive():
                return False
            time.sleep(0.1)
        return False

    def ready_info(self) -> dict | None:
        try:
            return json.loads(self._ready_file().read_text())
        except (OSError, ValueError):
            return None

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the supervisor and the process: SIGTERM (the running run stops at its next step
        and goes back to the queue), then SIGKILL after ``timeout`` seconds."""
        self._stopping.set()
        supervisor = self._supervisor
        if supervisor is not None and supervisor is not threading.current_thread():
            supervisor.join(timeout=5)
        with self._lock:
            proc = self._proc
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    log.warning("embedded worker did not stop in %.0f s: killing it", timeout)
                    proc.kill()
                    proc.wait()
            if proc is not None:
                self._release(proc.pid, crashed=False)
            if self._log_file is not None:
                self._log_file.close()

    def kill(self) -> None:
        """``kill -9`` the process (tests; a supervised worker is then restarted)."""
        with self._lock:
            if self.alive:
                self._proc.kill()
                self._proc.wait()

    # ------------------------------------------------------------------ supervision
    def ensure_alive(self) -> bool:
        """Restart the process if it died. Returns True if it was alive.

        The runs it held are released at once; restarts back off (1 s, 2 s, 4 s ... 60 s)
        while the worker keeps dying young, so a broken setup does not spin.
        """
        with self._lock:
            if self._stopping.is_set():
                return False
            if self.alive:
                return True
            if self._proc is not None and not self._exit_handled:
                self._exit_handled = True
                log.error(
                    "embedded worker (pid %s) exited with code %s",
                    self._proc.pid, self._proc.returncode,
                )
                self._release(self._proc.pid, crashed=True)
                died_young = time.monotonic() - self._started_at < 60
                self._delay = (
                    min(self._delay * 2, self.max_restart_delay) if died_young
                    else self.min_restart_delay
                )
                self._next_start = time.monotonic() + (
                    self._delay / 2 if died_young else self.min_restart_delay
                )
            if time.monotonic() < self._next_start:
                return False
            if self._proc is not None:
                self.restarts += 1
            self.start()
            return False

    def supervise(self, interval: float = 1.0) -> threading.Thread:
        """Start (once) a daemon thread that calls :meth:`ensure_alive` every ``interval`` s."""
        with self._lock:
            if self._supervisor is not None and self._supervisor.is_alive():
                return self._supervisor

            def loop() -> None:
                while not self._stopping.wait(interval):
                    try:
                        self.ensure_alive()
                    except Exception:
                        log.exception("embedded worker supervision failed")

            self._supervisor = threading.Thread(target=loop, name="pwan-worker-supervisor",
                                                daemon=True)
            self._supervisor.start()
            return self._supervisor

    def _release(self, pid: int, crashed: bool) -> None:
        """Put back (or fail) what the dead process ``pid`` was running."""
        worker = f"{self.nodename}:{pid}"
        try:
            from workers.reaper import release_dead_worker

            released = release_dead_worker(worker, crashed=crashed)
            if any(released.values()):
                log.warning("released items of %s: %s", worker, released)
        except Exception:
            log.exception("could not release the runs of %s (the reaper will)", worker)
        (self._data_dir() / "workers" / f"{self.nodename}.{pid}.json").unlink(missing_ok=True)

    def __enter__(self) -> "EmbeddedWorker":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
