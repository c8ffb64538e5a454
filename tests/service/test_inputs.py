"""Inputs that reach the database (issue 15): control characters are refused with a 422 naming
the field on SQLite and PostgreSQL; a run without guidance stores the model's recommendation and
where it came from, through the service, REST, the page and the worker's report."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import service
from workers.reaper import broker_queue_size

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[2]
PYRAMIDAL = ROOT / "models" / "mini-pyramidal"
TINY = {"model": "tiny", "schedule": "2-2-1", "frames": 17, "height": 128, "width": 128, "seed": 3}
PASSWORD = "pw-inputs"
needs_mini = pytest.mark.skipif(not (ROOT / "models" / "mini" / "transformer").is_dir()
                                or not (PYRAMIDAL / "card.json").is_file(), reason="the mini models are not shipped")


@pytest.fixture
def client(pwan_env, monkeypatch):
    """The REST API in-process, over the ``db_url`` database (SQLite and PostgreSQL)."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from ui.rest import build_router, install_error_handlers

    monkeypatch.setenv("PWAN_ADMIN_PASSWORD", PASSWORD)
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(build_router())
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def counts() -> tuple[int, int]:
    return service.list_runs(limit=1)["total"], broker_queue_size("infer")


CONTROL = [
    ("NUL in the prompt", "/api/runs", {"prompt": "a\u0000b"}, "prompt", "U+0000 at position 2"),
    ("escape in the prompt", "/api/runs", {"prompt": "a red \u001b[31mcircle"}, "prompt", "U+001B at position 7"),
    ("NUL in the negative prompt", "/api/runs", {"prompt": "a cat", "negative_prompt": "blurry\u0000"},
     "negative_prompt", "U+0000 at position 7"),
    ("NUL in a checkpoint name", "/api/runs", {"prompt": "a cat", "checkpoint": "x\u0000"}, "checkpoint", "U+0000"),
    ("NUL in a comparison prompt", "/api/comparisons", {"prompt": "\u0000a cat"}, "prompt", "U+0000 at position 1"),
    ("surrogate in the prompt", "/api/runs", {"prompt": "a \ud800 cat"}, "prompt", "U+D800"),
]


@pytest.mark.parametrize("case", CONTROL, ids=[c[0] for c in CONTROL])
def test_control_characters_are_a_422_naming_the_field_and_nothing_is_stored(client, case):
    _name, path, body, field, words = case
    warm = client.post("/api/runs", json={"prompt": "a warm-up\n\trun\r\n", **TINY})  # ordinary whitespace is fine
    assert warm.status_code == 201 and warm.json()["prompt"] == "a warm-up\n\trun"
    before = counts()
    # sent as ASCII JSON (escapes), as any client may: a lone surrogate cannot be encoded as UTF-8
    r = client.post(path, content=json.dumps({**TINY, **body}), headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field and words in r.json()["detail"]
    assert "control character" in r.json()["detail"] or "surrogate" in r.json()["detail"]
    assert counts() == before == (1, 1)


def test_names_search_and_admin_fields_refuse_control_characters(client, tmp_path):
    from db.config import data_dir

    auth = ("admin", PASSWORD)
    folder = data_dir() / "ck"
    folder.mkdir()
    (folder / "card.json").write_text(json.dumps({"base": "tiny", "kind": "full"}))
    bad = client.post("/api/admin/checkpoints", json={"path": str(folder), "base": "tiny", "name": "ck\u0000"}, auth=auth)
    assert bad.status_code == 422 and bad.json()["field"] == "name", bad.text
    ck = client.post("/api/admin/checkpoints", json={"path": str(folder), "base": "tiny", "name": "ck"}, auth=auth)
    assert ck.status_code == 201, ck.text
    renamed = client.patch(f"/api/admin/checkpoints/{ck.json()['id']}", json={"name": "c\u0007k"}, auth=auth)
    assert renamed.status_code == 422 and renamed.json()["field"] == "name"
    job = client.post("/api/admin/jobs", json={"name": "j\u0000", "base": "tiny", "config": {}}, auth=auth)
    assert job.status_code == 422 and job.json()["field"] == "name"
    job = client.post("/api/admin/jobs", json={"name": "j", "base": "tiny", "config": {"sample_prompt": "a\u0000"}},
                      auth=auth)
    assert job.status_code == 422 and job.json()["field"] == "sample_prompt"
    assert service.list_jobs()["total"] == 0
    for query in ({"search": "a\u0000"}, {"model": "tiny\u0000"}):
        r = client.get("/api/runs", params=query)
        assert r.status_code == 422 and r.json()["field"] == next(iter(query)), r.text


@needs_mini
def test_rest_run_without_guidance_stores_the_cards_and_says_so(client):
    assert service.register_shipped_checkpoints(ROOT / "models")
    card = json.loads((PYRAMIDAL / "card.json").read_text())
    r = client.post("/api/runs", json={"prompt": "a blue square moves up", "checkpoint": "mini-pyramidal",
                                       "schedule": "12-12-6", "seed": 1})
    assert r.status_code == 201, r.text
    got = client.get(f"/api/runs/{r.json()['id']}").json()
    assert got["guidance"] == card["guidance_per_stage"] == [1.0, 1.0, 1.5]
    assert got["guidance_source"] == "checkpoint card"
    own = client.post("/api/runs", json={"prompt": "a cat", **TINY, "guidance": 2}).json()
    assert own["guidance"] == [2.0] * 3 and own["guidance_source"] == "request"
    plain = client.post("/api/runs", json={"prompt": "a cat", **TINY}).json()
    assert plain["guidance"] == [5.0] * 3 and plain["guidance_source"] == "default"
    preset = client.post("/api/runs", json={"prompt": "a cat", **TINY, "model": "mini"}).json()
    assert preset["guidance"] == [json.loads((ROOT / "models" / "mini" / "card.json").read_text())["guidance"]] * 3
    assert preset["guidance_source"] == "preset card"
    again = client.post(f"/api/runs/{r.json()['id']}/rerun").json()
    assert again["guidance"] == [1.0, 1.0, 1.5] and again["guidance_source"] == "checkpoint card"


def _tuned_checkpoint(folder: Path) -> dict:
    folder.mkdir()
    (folder / "card.json").write_text(json.dumps({"base": "tiny", "kind": "full", "guidance": 2.0,
                                                  "guidance_per_stage": [1.0, 1.0, 2.5]}))
    return service.register_checkpoint(folder, "tiny", "tuned")


def test_page_submit_with_the_box_untouched_stores_the_cards_guidance_and_source(pwan_env, tmp_path):
    from ui import views
    from ui.tabs.common import CHECKPOINT_PREFIX, model_guidance
    from ui.tabs.generate import submit

    ck = _tuned_checkpoint(tmp_path / "tuned")
    choice = f"{CHECKPOINT_PREFIX}{ck['id']}"
    common = dict(negative_prompt="", model=choice, seed=1, random_seed=False, size=None, compare=False)
    out = submit("a cat", mode="pyramidal", schedule="2-2-1", guidance=model_guidance(choice), **common)
    row = service.get_run(out["run_ids"][0])
    assert row["guidance"] == [1.0, 1.0, 2.5] and row["guidance_source"] == "checkpoint card"
    assert "guidance 1, 1, 2.5 (checkpoint card)" in views.run_card(row)
    out = submit("a cat", mode="pyramidal", schedule="2-2-1", guidance="", **common)  # emptied: the same
    row = service.get_run(out["run_ids"][0])
    assert row["guidance"] == [1.0, 1.0, 2.5] and row["guidance_source"] == "checkpoint card"
    out = submit("a cat", mode="pyramidal", schedule="2-2-1", guidance="3", **common)
    assert service.get_run(out["run_ids"][0])["guidance_source"] == "request"


def test_the_workers_report_carries_the_rows_guidance_and_source(pwan_env, tmp_path):
    from core import load_pipeline
    from workers.models import ModelCache
    from workers.runner import execute_run

    _tuned_checkpoint(tmp_path / "tuned")
    run = service.submit_run("a cat", checkpoint="tuned", schedule="1-1-1", frames=17, height=64, width=64, seed=1)
    assert run["guidance_source"] == "checkpoint card"
    pipe = load_pipeline("tiny", device="cpu")  # the tiny base stands in for the checkpoint's weights
    assert execute_run(run["id"], "test@host:1", ModelCache(size=1, loader=lambda *_: pipe)) == "done"
    report = service.get_run(run["id"])["report"]
    assert report["guidance"] == [1.0, 1.0, 2.5] and report["guidance_source"] == "checkpoint card"
