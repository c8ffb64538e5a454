"""Fixtures for the studio: real ``python app.py`` servers on free ports, and headless Chromium.

* ``studio``: the full server (embedded worker, SQLite broker and database in a tmp folder,
  model ``tiny`` preloaded, admin password ``ADMIN_PASSWORD``). One per session.
* ``bare_studio``: the same with ``--no-worker`` (runs stay queued): validation and
  property-based tests, which must not run hundreds of videos.
* ``browser``: Debian's Chromium driven by Playwright (never ``playwright install``).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
ADMIN_PASSWORD = "pw-test-admin"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                 "--autoplay-policy=no-user-gesture-required"]
SCREENSHOTS = ROOT / "docs" / "screenshots"
FINAL = ("done", "failed", "cancelled")
#: The page's default on a CPU machine: quick with the tiny model.
TINY_RUN = {"model": "tiny", "schedule": "2-2-1", "frames": 17, "height": 128, "width": 128}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Studio:
    """A running ``python app.py`` and an HTTP client for it."""

    def __init__(self, data_dir: Path, worker: bool):
        self.data_dir, self.port = data_dir, _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "PWAN_DATA_DIR": str(data_dir),
            "PWAN_DATABASE_URL": f"sqlite:///{data_dir / 'pwan.sqlite3'}",
            "PWAN_BROKER_URL": f"sqla+sqlite:///{data_dir / 'broker.sqlite3'}",
            "PWAN_MODEL": "tiny",
            "PWAN_PRELOAD": "tiny",
            "PWAN_WAN_PATH": str(data_dir / "no-wan-here"),  # wan2.1-1.3b fails to load, clearly
            "PWAN_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "PWAN_HEARTBEAT_SECONDS": "0.5",
            "PWAN_STALE_SECONDS": "10",
            "PWAN_PROGRESS_SECONDS": "0.1",
            "PWAN_BROKER_POLL_SECONDS": "0.1",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "GRADIO_ANALYTICS_ENABLED": "False",
        }
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = data_dir / "app.log"
        cmd = [sys.executable, str(ROOT / "app.py"), "--port", str(self.port)]
        if not worker:
            cmd.append("--no-worker")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def wait_up(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"app.py exited with {self.proc.returncode}\n{self.logs()}")
            try:
                if self.http.get("/api/health").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"app.py did not answer in {timeout} s\n{self.logs()}")

    def logs(self, tail: int = 6000) -> str:
        text = self.log_path.read_text(errors="replace")[-tail:]
        worker_log = self.data_dir / "workers" / "embedded.log"
        if worker_log.is_file():
            text += "\n--- worker ---\n" + worker_log.read_text(errors="replace")[-tail:]
        return text

    def run_count(self) -> int:
        return self.http.get("/api/runs", params={"limit": 1}).json()["total"]

    def wait_run(self, run_id: int, statuses=FINAL, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        row = None
        while time.monotonic() < deadline:
            row = self.http.get(f"/api/runs/{run_id}").json()
            if row["status"] in statuses:
                return row
            time.sleep(0.2)
        raise AssertionError(f"run {run_id} did not reach {statuses}: {row}\n{self.logs()}")

    def close(self) -> None:
        self.http.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # our own process group: app + its worker
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


def _start(tmp_path_factory, name: str, worker: bool):
    server = Studio(tmp_path_factory.mktemp(name) / "data", worker=worker)
    try:
        server.wait_up()
    except BaseException:
        server.close()
        raise
    return server


@pytest.fixture(scope="session")
def studio(tmp_path_factory):
    server = _start(tmp_path_factory, "studio", worker=True)
    yield server
    server.close()


@pytest.fixture(scope="session")
def bare_studio(tmp_path_factory):
    server = _start(tmp_path_factory, "bare", worker=False)
    yield server
    server.close()


@pytest.fixture(scope="session")
def done_comparison(studio):
    """A finished comparison of the tiny model (original 0-0-5 vs pyramid 2-2-1), seed 7."""
    body = {"prompt": "a red circle moves to the right", "seed": 7, **TINY_RUN}
    body.pop("schedule")
    r = studio.http.post("/api/comparisons", json={**body, "schedule": "2-2-1"})
    assert r.status_code == 201, r.text
    group = r.json()
    rows = [studio.wait_run(run["id"]) for run in group["runs"]]
    assert [row["status"] for row in rows] == ["done", "done"], [row["error"] for row in rows]
    return group, rows


@pytest.fixture(scope="session")
def chromium():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium):
    context = chromium.new_context(viewport={"width": 1280, "height": 1100})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    yield pg
    context.close()


def screenshot(pg, name: str) -> Path:
    """A small PNG of the page in docs/screenshots/ (256-colour palette)."""
    from PIL import Image

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    pg.screenshot(path=str(path), full_page=False)
    with Image.open(path) as img:
        small = img.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)
    return path
