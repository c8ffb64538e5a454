"""Property-based run against the OpenAPI spec: no input makes the server answer 5xx.

The spec is the one ``/openapi.json`` serves (built from the same router, and checked equal to
the served one); requests go to the ``--no-worker`` server, so what they post stays queued and
nothing is generated. 30 examples per operation, positive and negative data, sent with the
admin password (the 401/403 answers are covered by test_rest.py).
"""
from __future__ import annotations

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from tests.ui.conftest import ADMIN_PASSWORD
from ui.rest import build_router, install_error_handlers

pytestmark = pytest.mark.timeout(600)


def _spec() -> dict:
    app = FastAPI(title="Pyramidal Wan studio API", version="1.0")
    install_error_handlers(app)
    app.include_router(build_router())
    return app.openapi()


SPEC = _spec()
schema = schemathesis.openapi.from_dict(SPEC)
schema.config.generation.update(modes=[schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE])


def test_the_spec_is_the_served_one(bare_studio):
    served = bare_studio.http.get("/openapi.json").json()
    assert served["paths"] == SPEC["paths"]


@schema.parametrize()
@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_no_input_makes_a_server_error(case, bare_studio):
    # With the admin password, so that the admin handlers run too (not only the 401 answer).
    case.call_and_validate(base_url=bare_studio.url, checks=[not_a_server_error],
                           headers={"Authorization": f"Bearer {ADMIN_PASSWORD}"})
