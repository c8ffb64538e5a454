"""Fixtures for the finetune tests: a shared latent cache of mini-world clips, fresh tiny models,
an isolated SQLite installation, and a real Celery worker on the ``train`` queue."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

#: The smallest shape a three-stage plan accepts: latents 2x2x2, 3x4x4, 5x8x8.
SHAPE = dict(frames=17, height=64, width=64)
SCHEDULE = "1-1-1"
DATA = "world:2"


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Tiny models on a shared CPU: one thread is ~10x faster than OpenMP teams fighting for cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def world_cache(tmp_path_factory):
    """A cache folder holding the latents of two mini-world clips at every stage."""
    from core import StagePlan
    from core.presets import build_components
    from finetune.data import build_cache, world_clips

    folder = tmp_path_factory.mktemp("world-cache")
    comps = build_components("tiny", "cpu")
    report = build_cache(world_clips(2), comps, StagePlan.parse(SCHEDULE),
                         (SHAPE["frames"], SHAPE["height"], SHAPE["width"]), folder, base="tiny")
    assert len(report.entries) == 2 and not report.skipped
    return folder


@pytest.fixture
def train_config(world_cache, tmp_path):
    """``train_config(**overrides)``: a small TrainConfig over the shared cache."""
    from finetune.pyramidal import TrainConfig

    def make(**overrides) -> TrainConfig:
        settings = dict(base="tiny", data=DATA, out=str(tmp_path / "ckpt"), steps=4, schedule=SCHEDULE,
                        lr=1e-2, cache_dir=str(world_cache), device="cpu", **SHAPE)
        settings.update(overrides)
        return TrainConfig(**settings)

    return make


@pytest.fixture
def tiny():
    """Fresh tiny components (the same seeded weights every call)."""
    from core.presets import build_components

    return lambda: build_components("tiny", "cpu")


@pytest.fixture
def sqlite_env(tmp_path, monkeypatch, env_for):
    """This process pointed at an empty SQLite installation in tmp (tables created)."""
    import workers
    from db.session import dispose_engines, init_db

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    env = env_for(data_dir, f"sqlite:///{data_dir / 'pwan.sqlite3'}")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    workers.configure()
    init_db()
    yield env
    dispose_engines()


class TrainWorker:
    """A real ``celery worker -Q train`` child process for one test."""

    def __init__(self, env: dict[str, str], data_dir: Path):
        from workers.embedded import EmbeddedWorker

        child_env = {**os.environ, **env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self.data_dir = data_dir
        self.worker = EmbeddedWorker(("train",), name="trainer", env=child_env,
                                     log_path=data_dir / "workers" / "trainer.log", min_restart_delay=0.2)

    def logs(self, tail: int = 4000) -> str:
        path = self.data_dir / "workers" / "trainer.log"
        return path.read_text(errors="replace")[-tail:] if path.is_file() else ""

    def wait_job(self, job_id: int, condition, timeout: float = 150) -> dict:
        import service

        deadline = time.monotonic() + timeout
        row = None
        while time.monotonic() < deadline:
            row = service.get_job(job_id)
            if condition(row):
                return row
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} did not reach the expected state in {timeout} s: {row}\n{self.logs()}")


@pytest.fixture
def train_worker(sqlite_env):
    data_dir = Path(sqlite_env["PWAN_DATA_DIR"])
    tw = TrainWorker(sqlite_env, data_dir)
    tw.worker.start()
    if not tw.worker.wait_ready(120):
        raise AssertionError(f"train worker did not become ready\n{tw.logs()}")
    yield tw
    tw.worker.kill()
    tw.worker.stop(timeout=1)
