"""Finetune jobs through the service: list, get, cancel."""
from __future__ import annotations

import pytest

import service
from db import jobs as db_jobs

pytestmark = pytest.mark.timeout(120)


def test_finetune_job_helpers(pwan_env):
    job = db_jobs.add_job(name="cats-v1", base="tiny", config={"steps": 10})
    assert service.list_jobs()["total"] == 1
    assert service.get_job(job["id"])["name"] == "cats-v1"
    assert service.cancel_job(job["id"])["status"] == "cancelled"
    with pytest.raises(service.NotFoundError):
        service.get_job(job["id"] + 1)
    with pytest.raises(service.ValidationError):
        service.list_jobs(status="weird")
