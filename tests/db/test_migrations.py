"""Schema migrations on SQLite and PostgreSQL: a database of the released schema (made by the
old ``create_all``) is stamped and upgraded with its rows intact; an empty one gets every
revision; the migrations and the models agree; processes starting at once do not collide."""
from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from db import admin as db_admin
from db import checkpoints, jobs, migrate, runs
from db.models import Base, Run
from db.session import dispose_engines, get_engine, write_session
from tests.conftest import POSTGRES_ADMIN_URL, service_missing
from tests.db import released_models as released

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "postgresql"])
def blank_url(request, tmp_path, monkeypatch):
    """A database with nothing in it (PostgreSQL: one made for this test), as PWAN_DATABASE_URL."""
    admin = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'pwan.sqlite3'}"
    else:
        name = f"pwan_mig_{uuid.uuid4().hex[:12]}"
        admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT",
                              connect_args={"connect_timeout": 3})
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        except Exception as exc:  # noqa: BLE001
            admin.dispose()
            service_missing(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {exc}")
        url = make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    monkeypatch.setenv("PWAN_DATABASE_URL", url)
    yield url
    dispose_engines()
    if admin is not None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def differences(url: str, metadata=Base.metadata) -> list:
    with create_engine(url).connect() as conn:
        return compare_metadata(MigrationContext.configure(conn), metadata)


def revision_of(url: str) -> str | None:
    with create_engine(url).connect() as conn:
        return migrate.current(conn)


def test_a_released_database_is_stamped_upgraded_and_keeps_its_rows(blank_url):
    old = create_engine(blank_url)
    released.Base.metadata.create_all(old)  # what every release before migrations did
    with Session(old) as session, session.begin():
        ckpt = released.Checkpoint(name="cats", path="/ck/cats", base="tiny", kind="lora", card={"steps": 3})
        group = released.Comparison(prompt="a cat", seed=7)
        run = released.Run(prompt="a cat", model="tiny", mode="pyramidal", schedule="2-2-1",
                           guidance=[5.0, 5.0, 4.0], seed=7, frames=17, height=128, width=128,
                           checkpoint=ckpt, checkpoint_name="cats", comparison=group,
                           status="done", output_path="/out/1.mp4", report={"tflops": 0.5})
        job = released.FinetuneJob(name="cats-v2", base="tiny", config={"steps": 10}, checkpoint=ckpt,
                                   status="done", losses=[{"step": 1, "loss": 0.5}])
        session.add_all([ckpt, group, run, job])
        session.flush()
        ids = run.id, ckpt.id, job.id, group.id
    assert "alembic_version" not in inspect(old).get_table_names()
    old.dispose()

    get_engine(blank_url)  # what every process does when it opens the database
    assert revision_of(blank_url) == migrate.head()
    assert differences(blank_url) == []

    run_id, ckpt_id, job_id, group_id = ids
    row = runs.get_run(run_id)
    assert (row["prompt"], row["guidance"], row["status"], row["report"]) == ("a cat", [5.0, 5.0, 4.0], "done", {"tflops": 0.5})
    assert row["phase"] is row["still_path"] is row["guidance_source"] is None
    assert row["decoder"] == "full"  # runs made before the decoder column were decoded by the VAE
    assert checkpoints.get_checkpoint(ckpt_id)["card"] == {"steps": 3}
    assert jobs.get_job(job_id)["losses"] == [{"step": 1, "loss": 0.5}]
    assert [r["id"] for r in runs.get_comparison(group_id)["runs"]] == [run_id]
    assert runs.get_cancel_token_hash(run_id) == (True, None)  # an old run: the admin cancels it

    # the new columns and table work
    with write_session() as session:
        stored = session.get(Run, run_id)
        stored.phase, stored.still_path, stored.guidance_source = "decoding", "/out/1.png", "request"
    row = runs.get_run(run_id)
    assert (row["phase"], row["still_path"], row["guidance_source"]) == ("decoding", "/out/1.png", "request")
    spec = {k: row[k] for k in runs.RUN_INPUT_FIELDS}
    (new,) = runs.add_runs([{**spec, "decoder": "both"}], cancel_token_hashes=["ab" * 32])
    assert runs.get_cancel_token_hash(new["id"]) == (True, "ab" * 32)
    assert runs.get_run(new["id"])["decoder"] == "both"
    assert db_admin.attempt("1.2.3.4", "wrong", now=10.0, window=60, max_failures=3).failures == 1


def test_revision_1_is_the_released_schema(blank_url):
    engine = create_engine(blank_url)
    with engine.begin() as conn:
        command.upgrade(migrate.alembic_config(conn), migrate.RELEASED)
    assert "admin_failures" not in inspect(engine).get_table_names()
    engine.dispose()
    assert differences(blank_url, released.Base.metadata) == []


def test_an_empty_database_gets_every_revision_and_matches_the_models(blank_url):
    get_engine(blank_url)
    assert revision_of(blank_url) == migrate.head() == "0003"
    assert differences(blank_url) == []
    dispose_engines()
    shown = subprocess.run([sys.executable, "-m", "db.migrate", "--url", blank_url], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "at revision 0003" in shown.stdout, shown.stderr


def test_a_database_made_by_create_all_of_these_models_upgrades_too(blank_url):
    """A development build made the new columns with ``create_all``: revision 2 skips them."""
    plain = create_engine(blank_url)
    Base.metadata.create_all(plain)
    plain.dispose()
    get_engine(blank_url)
    assert revision_of(blank_url) == migrate.head()
    assert differences(blank_url) == []


STARTER = """
import sys, time
from db.session import get_engine
from db import runs
start = float(sys.argv[1])
time.sleep(max(0.0, start - time.time()))
get_engine()
runs.add_runs([dict(prompt="p", negative_prompt="", model="tiny", mode="original",
                    schedule="0-0-5", guidance=[5.0], seed=1, frames=17, height=128, width=128)])
"""


@pytest.mark.parametrize("made_by", ["nothing", "released create_all"])
def test_processes_starting_at_once_migrate_once(blank_url, made_by):
    if made_by != "nothing":
        plain = create_engine(blank_url)
        released.Base.metadata.create_all(plain)
        plain.dispose()
    start = time.time() + 4  # every process has imported by then, and opens the database at once
    procs = [subprocess.Popen([sys.executable, "-c", STARTER, str(start)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(4)]
    outs = [p.communicate(timeout=90)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, outs
    assert revision_of(blank_url) == migrate.head()
    assert runs.count_runs() == 4
