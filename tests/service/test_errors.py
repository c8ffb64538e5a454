"""One error-to-status table serves the REST API and the page."""
from __future__ import annotations

import pytest

import service


class OddValidation(service.ValidationError):
    pass


@pytest.mark.parametrize("exc, status", [
    (service.ValidationError("bad", "prompt"), 422),
    (OddValidation("bad"), 422),  # a subclass takes its base's status
    (service.NotFoundError("There is no run 9."), 404),
    (service.ConflictError("running"), 409),
    (service.UnauthorizedError("token?"), 401),
    (service.ForbiddenError("wrong token"), 403),
    (RuntimeError("a bug"), 500),
    (ValueError("not ours"), 500),
])
def test_each_error_has_one_status(exc, status):
    assert service.http_status(exc) == status
    assert service.is_user_error(exc) is (status < 500)


def test_the_field_travels_with_the_error():
    assert service.error_field(service.ValidationError("bad", "seed")) == "seed"
    assert service.error_field(service.ForbiddenError("wrong")) == "cancel_token"
    assert service.error_field(service.NotFoundError("none")) is None


def test_the_rest_api_and_the_page_answer_from_the_table():
    gr = pytest.importorskip("gradio")
    from ui import rest
    from ui.tabs import common as page

    def raising(exc):
        def fn():
            raise exc
        return fn

    with pytest.raises(rest.ApiError) as info:
        rest._call(raising(service.ConflictError("run 3 is running")))
    assert (info.value.status, info.value.detail) == (409, "run 3 is running")
    with pytest.raises(rest.ApiError) as info:
        rest._call(raising(service.UnauthorizedError("needs its token")))
    assert info.value.status == 401 and info.value.field == "cancel_token" and info.value.headers
    with pytest.raises(RuntimeError):  # a bug stays a bug: FastAPI answers 500
        rest._call(raising(RuntimeError("oops")))

    with pytest.raises(gr.Error, match="run 3 is running"):
        page.friendly(raising(service.ConflictError("run 3 is running")))()
    with pytest.raises(gr.Error, match="Something went wrong on the server"):
        page.friendly(raising(RuntimeError("oops")))()
