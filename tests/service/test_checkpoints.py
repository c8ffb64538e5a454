"""Checkpoints through the service: register, list, rename, delete; the shipped ones at start-up."""
from __future__ import annotations

import json

import pytest

import service

pytestmark = pytest.mark.timeout(120)


def test_checkpoints(pwan_env, checkpoint_dir, tmp_path):
    names = [c["name"] for c in service.list_checkpoints()]
    assert "tiny" in names
    ck = service.register_checkpoint(checkpoint_dir, "tiny", "cats")
    assert ck["kind"] == "lora" and ck["card"]["steps"] == 10
    listed = service.list_checkpoints()
    assert {"name": "cats", "builtin": False}.items() <= listed[-1].items()
    assert all(c["builtin"] for c in listed[:-1])

    for args, field in (
        ((tmp_path / "nowhere", "tiny", "x"), "path"),
        ((checkpoint_dir, "giant", "x"), "base"),
        ((checkpoint_dir, "tiny", "cats"), "name"),
        ((checkpoint_dir, "tiny", " "), "name"),
    ):
        with pytest.raises(service.ValidationError) as info:
            service.register_checkpoint(*args)
        assert info.value.field == field

    run = service.submit_run("a cat", checkpoint="cats", model=None, schedule="2-2-1", seed=1)
    assert run["model"] == "tiny" and run["checkpoint_id"] == ck["id"]
    # a comparison sets the finetuned checkpoint against its pretrained base
    original, pyramid = service.submit_comparison("a cat", checkpoint="cats", schedule="2-2-1", seed=1)["runs"]
    assert (pyramid["checkpoint_id"], pyramid["model"]) == (ck["id"], "tiny")
    assert (original["checkpoint_id"], original["model"], original["mode"]) == (None, "tiny", "original")
    with pytest.raises(service.ConflictError, match=str(run["id"])):
        service.delete_checkpoint(ck["id"])
    service.cancel_run(run["id"], run["cancel_token"])
    service.cancel_run(pyramid["id"], pyramid["cancel_token"])

    assert service.rename_checkpoint(ck["id"], "cats-v2")["name"] == "cats-v2"
    assert service.delete_checkpoint(ck["id"])["name"] == "cats-v2"
    with pytest.raises(service.NotFoundError):
        service.get_checkpoint(ck["id"])
    with pytest.raises(service.ValidationError) as info:
        service.rerun(run["id"])
    assert info.value.field == "checkpoint"


def test_shipped_checkpoints_are_registered_once(pwan_env, tmp_path):
    models = tmp_path / "models"
    good, wrong_base, no_card = models / "mini-pyr", models / "other", models / "half-written"
    for folder in (good, wrong_base, no_card):
        folder.mkdir(parents=True)
    (good / "card.json").write_text(json.dumps({"base": "tiny", "kind": "full", "steps": 5}))
    (wrong_base / "card.json").write_text(json.dumps({"base": "no-such-preset", "kind": "full"}))
    added = service.register_shipped_checkpoints(models)
    assert [(r["name"], r["base"]) for r in added] == [("mini-pyr", "tiny")]
    assert service.register_shipped_checkpoints(models) == []  # already there
    names = [c["name"] for c in service.list_checkpoints()]
    assert "mini-pyr" in names and "other" not in names and "half-written" not in names
    assert service.register_shipped_checkpoints(tmp_path / "missing") == []
