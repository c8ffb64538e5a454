"""The REST API: every route, every bad input of the queue issue (422, nothing written), admin
routes without or with a wrong password (401/403), and the admin guard's rate limit."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.service.conftest import distilled_dir, teacher_dir  # noqa: F401  (fixtures: checkpoint folders)
from tests.ui.conftest import ADMIN_PASSWORD, TINY_RUN

pytestmark = pytest.mark.timeout(300)

GOOD = {"prompt": "a red circle moves to the right", "seed": 3, **TINY_RUN}
ADMIN = {"Authorization": f"Bearer {ADMIN_PASSWORD}"}


def token_of(run: dict) -> dict:
    """The header that cancels ``run`` (its submitter's secret)."""
    return {"X-Cancel-Token": run["cancel_token"]}


# ---------------------------------------------------------------------------- basics
def test_health_and_openapi(bare_studio):
    health = bare_studio.http.get("/api/health").json()
    assert health["status"] == "ok" and health["database"] == "ok"
    assert health["default_model"] == "tiny" and health["embedded_worker"] is None and health["admin"] is True
    spec = bare_studio.http.get("/openapi.json").json()
    for path in ("/api/runs", "/api/runs/{run_id}", "/api/runs/{run_id}/video", "/api/runs/{run_id}/cancel",
                 "/api/runs/{run_id}/still", "/api/comparisons", "/api/health", "/api/admin/jobs",
                 "/api/admin/checkpoints"):
        assert path in spec["paths"], path
    assert bare_studio.http.get("/docs").status_code == 200


def test_post_get_list_cancel_a_run(bare_studio):
    http = bare_studio.http
    r = http.post("/api/runs", json={**GOOD, "guidance": [7, 5, 3], "negative_prompt": "blurry"})
    assert r.status_code == 201, r.text
    run = r.json()
    assert run["status"] == "queued" and run["id"] >= 1 and run["guidance"] == [7.0, 5.0, 3.0]
    row = http.get(f"/api/runs/{run['id']}").json()
    for key in ("status", "stage", "step", "steps", "fraction", "report", "error"):
        assert key in row
    assert {k: row[k] for k in GOOD} == GOOD
    listed = http.get("/api/runs", params={"status": "queued", "search": "red circle"}).json()
    assert run["id"] in [item["id"] for item in listed["items"]] and listed["total"] >= 1
    assert http.get("/api/runs", params={"status": "done"}).json()["items"] == []
    missing = http.get(f"/api/runs/{run['id']}/video")
    assert missing.status_code == 404 and "no video" in missing.json()["detail"]
    assert http.get(f"/api/runs/{run['id']}/preview").status_code == 404
    cancelled = http.post(f"/api/runs/{run['id']}/cancel", headers=token_of(run))
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert http.post(f"/api/runs/{run['id']}/cancel", headers=token_of(run)).json()["status"] == "cancelled"  # idempotent
    again = http.post(f"/api/runs/{run['id']}/rerun")
    assert again.status_code == 201 and again.json()["seed"] == 3 and again.json()["id"] != run["id"]
    http.post(f"/api/runs/{again.json()['id']}/cancel", headers=token_of(again.json()))


def test_cancel_needs_the_runs_token_or_the_admin_password(bare_studio):
    http = bare_studio.http
    run, other = (http.post("/api/runs", json=GOOD).json() for _ in range(2))
    assert run["cancel_token"] and run["cancel_token"] != other["cancel_token"]
    assert "cancel_token" not in http.get(f"/api/runs/{run['id']}").json()
    assert all("cancel_token" not in r for r in http.get("/api/runs").json()["items"])

    none = http.post(f"/api/runs/{run['id']}/cancel")
    assert none.status_code == 401 and none.json()["field"] == "cancel_token"
    assert "cancel token" in none.json()["detail"]
    for headers in ({"X-Cancel-Token": "guess"}, token_of(other), {"Authorization": "Bearer wrong"}):
        wrong = http.post(f"/api/runs/{run['id']}/cancel", headers=headers)
        assert wrong.status_code == 403, (headers, wrong.text)
    assert http.get(f"/api/runs/{run['id']}").json()["status"] == "queued"
    assert http.post(f"/api/runs/{run['id']}/cancel", headers=token_of(run)).json()["status"] == "cancelled"
    by_admin = http.post(f"/api/runs/{other['id']}/cancel", headers=ADMIN)
    assert by_admin.status_code == 200 and by_admin.json()["status"] == "cancelled"

    group = http.post("/api/comparisons", json=GOOD).json()
    original, pyramid = group["runs"]
    assert http.post(f"/api/runs/{original['id']}/cancel", headers=token_of(pyramid)).status_code == 403
    for r in (original, pyramid):
        assert http.post(f"/api/runs/{r['id']}/cancel", headers=token_of(r)).json()["status"] == "cancelled"
    spec = http.get("/openapi.json").json()["paths"]["/api/runs/{run_id}/cancel"]["post"]
    assert "x-cancel-token" in [p["name"].lower() for p in spec["parameters"]]


def test_random_seed_is_stored(bare_studio):
    body = {k: v for k, v in GOOD.items() if k != "seed"}
    run = bare_studio.http.post("/api/runs", json=body).json()
    assert isinstance(run["seed"], int) and 0 <= run["seed"] < 2**32
    bare_studio.http.post(f"/api/runs/{run['id']}/cancel", headers=token_of(run))


def test_post_comparison_queues_original_and_pyramid(bare_studio):
    r = bare_studio.http.post("/api/comparisons", json={**{k: v for k, v in GOOD.items() if k != "schedule"},
                                                         "schedule": "2-2-1"})
    assert r.status_code == 201, r.text
    group = r.json()
    original, pyramid = group["runs"]
    assert (original["mode"], original["schedule"]) == ("original", "0-0-5")
    assert (pyramid["mode"], pyramid["schedule"]) == ("pyramidal", "2-2-1")
    assert original["seed"] == pyramid["seed"] == 3 == group["seed"]
    assert bare_studio.http.get(f"/api/comparisons/{group['id']}").json()["id"] == group["id"]
    for run in group["runs"]:
        bare_studio.http.post(f"/api/runs/{run['id']}/cancel", headers=token_of(run))


# ---------------------------------------------------------------------------- bad inputs
BAD_RUNS = {
    "empty prompt": ({"prompt": ""}, "prompt", "empty"),
    "blank prompt": ({"prompt": "   \n "}, "prompt", "empty"),
    "5000-character prompt": ({"prompt": "a" * 5000}, "prompt", "5,000 characters"),
    "no prompt": ({"prompt": None, "drop_prompt": True}, "prompt", "required"),
    "unknown preset": ({"model": "wan9-huge"}, "model", "unknown model"),
    "unknown checkpoint name": ({"checkpoint": "nope"}, "checkpoint", "unknown checkpoint"),
    "unknown checkpoint id": ({"checkpoint": 999}, "checkpoint", "unknown checkpoint"),
    "schedule not numbers": ({"schedule": "fast"}, "schedule", "not valid"),
    "schedule without steps": ({"schedule": "0-0-0"}, "schedule", "no steps"),
    "schedule with a hole": ({"schedule": "2-0-1"}, "schedule", "nearest valid"),
    "schedule with 5 stages": ({"schedule": "1-1-1-1-1"}, "schedule", "at most 4"),
    "original with a pyramid": ({"mode": "original"}, "schedule", "full resolution"),
    "frames not 1+16k": ({"frames": 18}, "frames", "nearest valid shape"),
    "height not a multiple": ({"height": 100}, "height", "multiple of 64"),
    "width zero": ({"width": 0}, "width", "multiple of 64"),
    "huge frames": ({"frames": 10**9}, "frames", "less than or equal"),
    "negative seed": ({"seed": -1}, "seed", "0 to 4,294,967,295"),
    "seed too large": ({"seed": 2**32}, "seed", "0 to 4,294,967,295"),
    "seed not a number": ({"seed": "lucky"}, "seed", "valid integer"),
    "unknown mode": ({"mode": "turbo"}, "mode", "pyramidal"),
    "guidance out of range": ({"guidance": 50}, "guidance", "out of range"),
    "guidance per stage, wrong count": ({"guidance": [5, 4]}, "guidance", "one per stage"),
    "misspelt field": ({"promt": "x"}, "promt", "not a known field"),
    "unknown decoder": ({"decoder": "fast"}, "decoder", "'both'"),
    "tiny decoder of a model without one": ({"model": "wan2.1-1.3b", "decoder": "tiny"}, "decoder",
                                            "no tiny decoder"),
}


@pytest.mark.parametrize("change", list(BAD_RUNS.values()), ids=list(BAD_RUNS))
def test_bad_run_is_422_with_a_message_and_writes_nothing(bare_studio, change):
    patch, field, words = change
    body = {**GOOD, **{k: v for k, v in patch.items() if k != "drop_prompt"}}
    if patch.get("drop_prompt"):
        body.pop("prompt")
    before = bare_studio.run_count()
    r = bare_studio.http.post("/api/runs", json=body)
    assert r.status_code == 422, r.text
    error = r.json()
    assert error["field"] == field and words in error["detail"], error
    assert "Traceback" not in error["detail"] and len(error["detail"]) < 600
    assert bare_studio.run_count() == before


@pytest.mark.parametrize("patch", [{"prompt": ""}, {"prompt": "a" * 5000}, {"model": "nope"},
                                   {"schedule": "x"}, {"height": 100}, {"seed": -5}, {"decoder": "fast"},
                                   {"model": "wan2.1-1.3b", "decoder": "both"}],
                         ids=["empty", "long", "model", "schedule", "shape", "seed", "decoder", "no tiny decoder"])
def test_bad_comparison_is_422_and_writes_nothing(bare_studio, patch):
    before = bare_studio.run_count()
    r = bare_studio.http.post("/api/comparisons", json={**GOOD, **patch})
    assert r.status_code == 422 and r.json()["detail"]
    assert bare_studio.run_count() == before


def test_malformed_json_and_bad_ids(bare_studio):
    http = bare_studio.http
    r = http.post("/api/runs", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "not valid JSON" in r.json()["detail"]
    assert http.get("/api/runs/0").status_code == 422
    assert http.get("/api/runs/abc").status_code == 422
    for path in ("/api/runs/999999", "/api/runs/999999/video", "/api/comparisons/999999"):
        r = http.get(path)
        assert r.status_code == 404 and "999999" in r.json()["detail"], path
    assert http.post("/api/runs/999999/cancel").status_code == 404
    assert http.get("/api/runs", params={"status": "sleeping"}).status_code == 422
    assert http.get("/api/runs", params={"limit": 0}).status_code == 422


# ---------------------------------------------------------------------------- admin
ADMIN_ROUTES = [("GET", "/api/admin/jobs"), ("GET", "/api/admin/jobs/1"), ("POST", "/api/admin/jobs/1/cancel"),
                ("GET", "/api/admin/checkpoints"), ("POST", "/api/admin/checkpoints"),
                ("PATCH", "/api/admin/checkpoints/1"), ("DELETE", "/api/admin/checkpoints/1"),
                ("DELETE", "/api/admin/runs/1")]


@pytest.mark.parametrize("method,path", ADMIN_ROUTES)
def test_admin_routes_need_the_password(bare_studio, method, path):
    r = bare_studio.http.request(method, path, json={})
    assert r.status_code == 401 and "password" in r.json()["detail"]
    assert "Basic" in r.headers["www-authenticate"]


def test_wrong_password_is_403_right_one_works(studio, tmp_path):
    http = studio.http
    assert http.get("/api/admin/jobs", auth=("admin", "wrong")).status_code == 403
    assert http.get("/api/admin/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert http.get("/api/admin/jobs", auth=("anyone", ADMIN_PASSWORD)).status_code == 200
    jobs = http.get("/api/admin/jobs", headers=ADMIN).json()
    assert jobs["total"] == len(jobs["items"]) and jobs["limit"] == 50
    assert http.get("/api/admin/jobs/7", headers=ADMIN).status_code == 404
    assert http.post("/api/admin/jobs/7/cancel", headers=ADMIN).status_code == 404

    # checkpoints: register, list, rename, use, delete
    folder = studio.data_dir / "uploads" / "ckpt"
    folder.mkdir(parents=True, exist_ok=True)
    bad = http.post("/api/admin/checkpoints", headers=ADMIN, json={"path": str(folder.parent / "none"), "base": "tiny", "name": "x"})
    assert bad.status_code == 422 and bad.json()["field"] == "path"
    # path tricks: folders outside the data folder are refused, even ones that exist
    (tmp_path / "outside").mkdir()
    for trick in (str(tmp_path / "outside"), "/etc", str(studio.data_dir / ".." / "outside"), "../../etc"):
        bad = http.post("/api/admin/checkpoints", headers=ADMIN, json={"path": trick, "base": "tiny", "name": "x"})
        assert bad.status_code == 422 and "outside the folders" in bad.json()["detail"], trick
    r = http.post("/api/admin/checkpoints", headers=ADMIN, json={"path": str(folder), "base": "tiny", "name": "my-ckpt"})
    assert r.status_code == 201, r.text
    ckpt = r.json()
    names = [c["name"] for c in http.get("/api/admin/checkpoints", headers=ADMIN).json()]
    assert "tiny" in names and "my-ckpt" in names
    renamed = http.patch(f"/api/admin/checkpoints/{ckpt['id']}", headers=ADMIN, json={"name": "renamed"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "renamed"
    assert http.patch(f"/api/admin/checkpoints/{ckpt['id']}", headers=ADMIN, json={"name": ""}).status_code == 422
    deleted = http.delete(f"/api/admin/checkpoints/{ckpt['id']}", headers=ADMIN)
    assert deleted.status_code == 200 and deleted.json()["name"] == "renamed"
    assert http.delete(f"/api/admin/checkpoints/{ckpt['id']}", headers=ADMIN).status_code == 404


def test_admin_guard_rate_limits_wrong_passwords(pwan_env, monkeypatch):
    from ui.auth import AdminGuard

    monkeypatch.setenv("PWAN_ADMIN_PASSWORD", "right")
    now = [0.0]
    guard = AdminGuard(max_failures=3, window=60, clock=lambda: now[0])
    assert [guard.check("wrong", "ip").reason for _ in range(3)] == ["wrong"] * 3
    locked = guard.check("right", "ip")
    assert not locked.ok and locked.reason == "locked" and locked.retry_after == 60
    assert guard.check("right", "other-ip").ok  # per client
    now[0] = 61.0
    assert guard.check("right", "ip").ok
    assert guard.check(None, "ip").reason == "missing"
    monkeypatch.delenv("PWAN_ADMIN_PASSWORD")
    assert guard.check("right", "ip").reason == "off"


def test_two_guards_on_one_database_share_the_lockout(pwan_env, monkeypatch):
    """Two page processes (two guards) see one count per client and lock together."""
    from db.models import AdminFailure
    from db.session import read_session
    from ui.auth import AdminGuard

    monkeypatch.setenv("PWAN_ADMIN_PASSWORD", "right")
    now = [1000.0]
    first, second = (AdminGuard(max_failures=3, window=60, clock=lambda: now[0]) for _ in range(2))
    assert first.check("wrong", "ip").reason == "wrong"
    assert second.check("wrong", "ip").reason == "wrong"
    assert first.check("wrong", "ip").reason == "wrong"
    for guard in (first, second):
        locked = guard.check("right", "ip")
        assert locked.reason == "locked" and locked.retry_after == 60
    assert second.check("right", "other-ip").ok
    with read_session() as session:
        assert session.get(AdminFailure, "ip").failures == [1000.0] * 3
    now[0] = 1061.0
    assert second.check("right", "ip").ok and first.check("right", "ip").ok


def test_client_key_believes_x_forwarded_for_only_from_trusted_proxies(monkeypatch):
    from ui.auth import client_key

    monkeypatch.delenv("PWAN_TRUSTED_PROXIES", raising=False)
    assert client_key("10.0.0.2", "203.0.113.7") == "10.0.0.2"  # unset: never trusted
    monkeypatch.setenv("PWAN_TRUSTED_PROXIES", "10.0.0.0/24, 192.0.2.1")
    assert client_key("10.0.0.2", "203.0.113.7") == "203.0.113.7"
    assert client_key("10.9.9.9", "203.0.113.7") == "10.9.9.9"  # not a proxy of ours
    assert client_key("10.0.0.2", "1.1.1.1, 203.0.113.7, 192.0.2.1") == "203.0.113.7"  # last untrusted hop
    assert client_key("10.0.0.2", ["1.1.1.1", "203.0.113.7"]) == "203.0.113.7"  # several headers
    assert client_key("10.0.0.2", None) == "10.0.0.2"
    monkeypatch.setenv("PWAN_TRUSTED_PROXIES", "10.0.0.0/33")
    with pytest.raises(ValueError, match="PWAN_TRUSTED_PROXIES"):
        client_key("10.0.0.2", "203.0.113.7")


def test_lockout_per_forwarded_client_behind_a_trusted_proxy(pwan_env, monkeypatch):
    """The REST API in this process: clients behind a proxy are told apart only when
    PWAN_TRUSTED_PROXIES names the proxy."""
    from fastapi import FastAPI
    from starlette.testclient import TestClient

    from ui.rest import build_router, install_error_handlers

    monkeypatch.setenv("PWAN_ADMIN_PASSWORD", ADMIN_PASSWORD)
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(build_router())
    wrong, right = {"Authorization": "Bearer wrong"}, ADMIN
    a, b = "203.0.113.7", "198.51.100.9"

    def get(http, forwarded, headers):
        return http.get("/api/admin/jobs", headers={**headers, "X-Forwarded-For": forwarded}).status_code

    # not trusted: the header is ignored, so every client of the proxy shares its lockout
    monkeypatch.delenv("PWAN_TRUSTED_PROXIES", raising=False)
    with TestClient(app, client=("10.0.0.2", 4000)) as http:
        assert [get(http, a, wrong) for _ in range(5)] == [403] * 5
        assert get(http, a, right) == 429 and get(http, b, right) == 429

    monkeypatch.setenv("PWAN_TRUSTED_PROXIES", "10.0.1.0/24")
    with TestClient(app, client=("10.0.1.5", 4000)) as http:
        assert [get(http, f"9.9.9.9, {a}", wrong) for _ in range(5)] == [403] * 5
        assert get(http, a, right) == 429
        assert get(http, b, right) == 200
        assert get(http, f"{a}, {b}", right) == 200  # what the client itself wrote is not believed


def test_the_server_ignores_x_forwarded_for_without_trusted_proxies(tmp_path, monkeypatch):
    """The real server (uvicorn): a client cannot dodge its lockout by sending X-Forwarded-For."""
    from tests.ui.conftest import Studio

    monkeypatch.setenv("PWAN_ADMIN_MAX_FAILURES", "2")
    monkeypatch.delenv("PWAN_TRUSTED_PROXIES", raising=False)
    server = Studio(tmp_path / "data", worker=False)
    try:
        server.wait_up()
        for forwarded in ("203.0.113.7", "203.0.113.8"):
            r = server.http.get("/api/admin/jobs", headers={"Authorization": "Bearer wrong", "X-Forwarded-For": forwarded})
            assert r.status_code == 403
        r = server.http.get("/api/admin/jobs", headers={**ADMIN, "X-Forwarded-For": "198.51.100.9"})
        assert r.status_code == 429, r.text
    finally:
        server.close()


def test_a_malformed_trusted_proxies_setting_stops_the_start(tmp_path):
    import os
    import subprocess
    import sys

    from tests.ui.conftest import ROOT

    env = {**os.environ, "PWAN_DATA_DIR": str(tmp_path), "PWAN_TRUSTED_PROXIES": "10.0.0.0/99"}
    done = subprocess.run([sys.executable, str(ROOT / "app.py"), "--no-worker"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "PWAN_TRUSTED_PROXIES" in done.stderr and "10.0.0.0/99" in done.stderr


# ---------------------------------------------------------------------------- with a worker
def test_finished_runs_video_preview_compare_and_delete(studio, done_comparison):
    http = studio.http
    group, (original, pyramid) = done_comparison
    assert original["mode"] == "original" and pyramid["mode"] == "pyramidal"
    report = pyramid["report"]
    assert len(report["seconds"]["stages"]) == 3 and len(report["tflops_per_stage"]) == 3
    assert pyramid["tflops"] < original["tflops"]
    video = http.get(f"/api/runs/{pyramid['id']}/video")
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    assert video.content[4:8] == b"ftyp"
    preview = http.get(f"/api/runs/{pyramid['id']}/preview")
    assert preview.status_code == 200 and preview.content[4:8] == b"ftyp"
    assert pyramid["phase"] == "writing video" and pyramid["report"]["seconds"]["write"] > 0
    still = http.get(f"/api/runs/{pyramid['id']}/still")
    assert still.status_code == 200 and still.headers["content-type"] == "image/jpeg"
    assert still.content[:2] == b"\xff\xd8" and len(still.content) < 20_000

    cmp = http.get("/api/compare", params={"a": original["id"], "b": pyramid["id"]}).json()
    assert cmp["quality"]["comparable"] and cmp["quality"]["frames"] == 17
    assert 0 < cmp["quality"]["psnr_mean"] < 100 and -1 <= cmp["quality"]["ssim_mean"] <= 1
    assert cmp["speedup"]["tflops"] > 1
    same = http.get("/api/compare", params={"a": pyramid["id"], "b": pyramid["id"]}).json()
    assert same["quality"]["psnr_mean"] is None or same["quality"]["ssim_mean"] == pytest.approx(1.0)
    sbs = http.get("/api/compare/video", params={"a": original["id"], "b": pyramid["id"]})
    assert sbs.status_code == 200 and sbs.content[4:8] == b"ftyp"

    # delete needs admin; a deleted run is gone with its video
    again = http.post(f"/api/runs/{pyramid['id']}/rerun").json()
    assert again["seed"] == pyramid["seed"] and again["schedule"] == "2-2-1"
    studio.wait_run(again["id"])
    assert http.delete(f"/api/admin/runs/{again['id']}").status_code == 401
    assert http.delete(f"/api/admin/runs/{again['id']}", headers=ADMIN).status_code == 200
    assert http.get(f"/api/runs/{again['id']}").status_code == 404
    assert http.get(f"/api/runs/{again['id']}/video").status_code == 404
    assert http.get(f"/api/runs/{again['id']}/still").status_code == 404
    assert not Path(studio.http.get(f"/api/runs/{pyramid['id']}").json()["still_path"]).with_name(
        f"{again['id']}.still.jpg").exists()


def test_the_decoder_reaches_the_row_the_report_and_the_videos(studio, done_comparison):
    http = studio.http
    _group, (_original, pyramid) = done_comparison
    r = http.post("/api/runs", json={**GOOD, "decoder": "both"})
    assert r.status_code == 201 and r.json()["decoder"] == "both", r.text
    row = studio.wait_run(r.json()["id"])
    assert row["status"] == "done", row["error"]
    assert row["decoder"] == row["report"]["decoder"] == "both" and row["report"]["decode_psnr_db"] > 0
    full = http.get(f"/api/runs/{row['id']}/video")
    tiny = http.get(f"/api/runs/{row['id']}/video", params={"decoder": "tiny"})
    assert full.status_code == tiny.status_code == 200 and tiny.content[4:8] == b"ftyp"
    assert full.content != tiny.content and "run-%d-tiny.mp4" % row["id"] in tiny.headers["content-disposition"]
    assert http.get(f"/api/runs/{row['id']}").json()["report"]["tiny_video_path"].endswith(f"{row['id']}.tiny.mp4")
    # a run decoded by the VAE only has no tiny video: a 404 that says why
    none = http.get(f"/api/runs/{pyramid['id']}/video", params={"decoder": "tiny"})
    assert none.status_code == 404 and "decoder 'full'" in none.json()["detail"]
    assert http.get(f"/api/runs/{pyramid['id']}/video", params={"decoder": "sharp"}).status_code == 422
    group = http.post("/api/comparisons", json={**GOOD, "decoder": "tiny"}).json()
    assert [run["decoder"] for run in group["runs"]] == ["tiny", "tiny"]
    for run in group["runs"]:
        http.post(f"/api/runs/{run['id']}/cancel", headers=token_of(run))


def test_admin_finetune_jobs(bare_studio):
    http = bare_studio.http
    bad = http.post("/api/admin/jobs", headers=ADMIN, json={"name": "j", "base": "tiny", "config": {"stepz": 1}})
    assert bad.status_code == 422 and "stepz" in bad.json()["detail"]
    assert http.post("/api/admin/jobs", json={"name": "j", "base": "tiny"}).status_code == 401
    before = len(http.get("/api/admin/jobs", headers=ADMIN).json()["items"])
    for key, trick in (("data", "/etc"), ("data", "../../.."), ("out", "/tmp/elsewhere"), ("cache_dir", "../x")):
        bad = http.post("/api/admin/jobs", headers=ADMIN,
                        json={"name": "j", "base": "tiny", "config": {"data": "world:4", "steps": 2, key: trick}})
        assert bad.status_code == 422 and bad.json()["field"] == key, (key, trick, bad.text)
    assert len(http.get("/api/admin/jobs", headers=ADMIN).json()["items"]) == before
    r = http.post("/api/admin/jobs", headers=ADMIN,
                  json={"name": "tiny-pyr", "base": "tiny", "config": {"data": "world:4", "steps": 2, "schedule": "2-2-1"}})
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["status"] == "queued" and job["config"]["steps"] == 2
    assert http.get(f"/api/admin/jobs/{job['id']}", headers=ADMIN).json()["name"] == "tiny-pyr"
    assert http.post(f"/api/admin/jobs/{job['id']}/cancel", headers=ADMIN).json()["status"] == "cancelled"


# ---------------------------------------------------------------------------- distilled checkpoints
@pytest.fixture
def api(pwan_env, monkeypatch):
    """The REST API in this process (over ``pwan_env``'s database and broker), admin password set."""
    from fastapi import FastAPI
    from starlette.testclient import TestClient

    from ui.rest import build_router, install_error_handlers

    monkeypatch.setenv("PWAN_ADMIN_PASSWORD", ADMIN_PASSWORD)
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(build_router())
    with TestClient(app) as http:
        yield http


def stored_runs() -> tuple[int, int]:
    """(rows in runs, messages waiting on the infer queue)."""
    import service
    from workers.reaper import broker_queue_size

    return service.list_runs(limit=1)["total"], broker_queue_size("infer")


def test_a_distilled_checkpoint_refuses_another_recipe_and_fills_its_own(api, distilled_dir):
    import service

    service.register_checkpoint(distilled_dir, "tiny", "tiny-distilled")
    body = {"prompt": "a red circle moves to the right", "checkpoint": "tiny-distilled", "seed": 3,
            "frames": 17, "height": 128, "width": 128}
    for change, field, words in [({"schedule": "20-20-10"}, "schedule", "schedule 20-20-10"),
                                 ({"guidance": 5}, "guidance", "guidance 5"),
                                 ({"mode": "original", "schedule": "0-0-5"}, "mode", "original model")]:
        r = api.post("/api/runs", json={**body, **change})
        assert r.status_code == 422, r.text
        error = r.json()
        assert error["field"] == field and words in error["detail"] and "2-2-1" in error["detail"], error
        assert "trained for schedule 2-2-1" in error["detail"] and "guidance 1 (baked in)" in error["detail"]
        assert stored_runs() == (0, 0)
    bad = api.post("/api/comparisons", json={**body, "schedule": "20-20-10"})
    assert bad.status_code == 422 and "2-2-1" in bad.json()["detail"] and stored_runs() == (0, 0)

    r = api.post("/api/runs", json=body)  # no schedule, no guidance: the recipe
    assert r.status_code == 201, r.text
    run = api.get(f"/api/runs/{r.json()['id']}").json()
    assert (run["schedule"], run["guidance"], run["guidance_source"]) == ("2-2-1", [1.0, 1.0, 1.0], "checkpoint card")
    assert (run["model"], run["checkpoint_name"], run["mode"]) == ("tiny", "tiny-distilled", "pyramidal")
    assert stored_runs() == (1, 1)
    group = api.post("/api/comparisons", json=body)
    assert group.status_code == 201, group.text
    original, student = group.json()["runs"]
    assert (original["mode"], original["schedule"], original["seed"]) == ("original", "0-0-50", 3)
    assert (student["schedule"], student["guidance"], student["seed"]) == ("2-2-1", [1.0, 1.0, 1.0], 3)
    assert stored_runs() == (3, 3)


def test_the_jobs_endpoint_takes_a_distillation(api, teacher_dir):
    import service

    teacher = service.register_checkpoint(teacher_dir, "tiny", "tiny-teacher")
    config = {"kind": "distill", "method": "dmd-pt-star", "teacher": "tiny-teacher", "student_plan": "2-2-1",
              "data": "world:2", "steps": 3, "frames": 17, "height": 64, "width": 64}
    for change, field in [({"method": "dmd-9000"}, "method"), ({"teacher": "/etc"}, "teacher"),
                          ({"kind": "sculpt"}, "kind")]:
        bad = api.post("/api/admin/jobs", headers=ADMIN, json={"name": "s", "base": "tiny", "config": {**config, **change}})
        assert bad.status_code == 422 and bad.json()["field"] == field, bad.text
    assert service.list_jobs()["total"] == 0
    r = api.post("/api/admin/jobs", headers=ADMIN, json={"name": "tiny-student", "base": "tiny", "config": config})
    assert r.status_code == 201, r.text
    job = api.get(f"/api/admin/jobs/{r.json()['id']}", headers=ADMIN).json()
    assert job["config"]["kind"] == "distill" and job["config"]["teacher"] == teacher["path"]
    assert job["config"]["steps"] == 3 and job["status"] == "queued"
