"""The page's main event, called programmatically with gradio_client (api_name="/generate")."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def client(studio, tmp_path_factory):
    from gradio_client import Client

    return Client(studio.url + "/", verbose=False, analytics_enabled=False,
                  download_files=str(tmp_path_factory.mktemp("gradio-client")))


def test_generate_is_an_api_endpoint_and_queues_a_run(client, studio):
    info = client.view_api(print_info=False, return_format="dict")
    assert "/generate" in info["named_endpoints"]
    params = [p["parameter_name"] for p in info["named_endpoints"]["/generate"]["parameters"]]
    assert params[:3] == ["prompt", "negative_prompt", "model"]

    result = client.predict(
        "a blue square moves to the left", "", "tiny", "pyramidal", "2-2-1", "5", 11, False,
        "17 x 128 x 128", False, api_name="/generate",
    )
    message, submitted = result[0], result[1]
    run_id = submitted["run_ids"][0]
    assert f"run #{run_id}" in message and submitted["seed"] == 11
    row = studio.wait_run(run_id)
    assert row["status"] == "done", row["error"]
    assert (row["prompt"], row["seed"], row["schedule"]) == ("a blue square moves to the left", 11, "2-2-1")


def test_generate_refuses_invalid_input_without_queueing(client, studio):
    before = studio.run_count()
    result = client.predict("", "", "tiny", "pyramidal", "2-2-1", "5", 1, False, "17 x 128 x 128", False,
                            api_name="/generate")
    assert "prompt is empty" in result[0] and result[1] is None
    assert studio.run_count() == before
