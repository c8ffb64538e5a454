"""Real worker processes for end-to-end tests.

``open_installation(broker, database)`` gives an isolated installation: a data folder, a
database (SQLite file or a fresh PostgreSQL schema), a broker (SQLite file or Redis db 15), and
the ``PWAN_*`` environment set in this process (for :mod:`service`) and for its workers.
``Installation.start_worker()`` launches ``python -m celery -A workers worker --pool solo ...``
(through :class:`workers.embedded.EmbeddedWorker`) and waits until it consumes. Closing the
installation kills its workers and restores the environment.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

FINAL = ("done", "failed", "cancelled")
#: A run that a test cancels or kills mid-way: about 7 s of denoising for the tiny model, with
#: hundreds of progress steps (at 17 x 32 x 32 it took half a second and could finish first).
SLOW = dict(model="tiny", schedule="200-200", frames=33, height=256, width=256, guidance=5.0)

class Installation:
    def __init__(self, data_dir: Path, env: dict[str, str]):
        self.data_dir, self.env = data_dir, env
        self.workers = []
        self._saved = {k: os.environ.get(k) for k in env}

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> "Installation":
        import workers

        os.environ.update(self.env)
        workers.configure()
        return self

    def __exit__(self, *exc) -> None:
        from db.session import dispose_engines

        for worker in self.workers:
            worker.kill()
            worker.stop(timeout=1)
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        dispose_engines()

    def start_worker(self, queues=("infer",), wait: bool = True, preload: str = ""):
        """Start a worker; ``preload="tiny"`` loads the model in the background at start."""
        from workers.embedded import EmbeddedWorker

        env = {**os.environ, **self.env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "PWAN_PRELOAD": preload}
        name = f"test{len(self.workers)}"
        worker = EmbeddedWorker(
            queues, name=name, env=env, log_path=self.data_dir / "workers" / f"{name}.log",
            min_restart_delay=0.2,
        )
        self.workers.append(worker)
        worker.start()
        if wait and not worker.wait_ready(90):
            raise AssertionError(f"worker did not become ready\n{self.logs()}")
        return worker

    # ------------------------------------------------------------------ helpers
    def logs(self, tail: int = 4000) -> str:
        parts = []
        for path in sorted((self.data_dir / "workers").glob("*.log")):
            parts.append(f"--- {path.name} ---\n{path.read_text(errors='replace')[-tail:]}")
        return "\n".join(parts)

    def wait(self, run_id: int, statuses=FINAL, timeout: float = 90, **conditions) -> dict:
        """Poll the run until its status is in ``statuses`` (and columns match ``conditions``,
        given as callables or values)."""
        import service

        deadline = time.monotonic() + timeout
        row = None
        while time.monotonic() < deadline:
            row = service.get_run(run_id)
            if row["status"] in statuses and all(
                (check(row[key]) if callable(check) else row[key] == check)
                for key, check in conditions.items()
            ):
                return row
            time.sleep(0.05)
        raise AssertionError(
            f"run {run_id} did not reach {statuses} {conditions or ''} in {timeout} s: {row}\n"
            f"{self.logs()}"
        )


@pytest.fixture(scope="session")
def open_installation(request, tmp_path_factory, fresh_database, env_for):
    """``open_installation(broker="sqlite"|"redis", database="sqlite"|"postgresql")``: a
    context manager; skips (or fails with CI=true) when the service is down."""

    def open_(broker: str = "sqlite", database: str = "sqlite") -> Installation:
        data_dir = tmp_path_factory.mktemp(f"{broker}-{database}") / "data"
        db_url = fresh_database(database, data_dir)
        broker_url = None
        if broker == "redis":
            import redis

            broker_url = request.getfixturevalue("redis_available")
            redis.Redis.from_url(broker_url).flushdb()
        return Installation(data_dir, env_for(data_dir, db_url, broker_url))

    return open_
