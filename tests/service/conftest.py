"""Fixtures of the service tests."""
from __future__ import annotations

import json

import pytest


@pytest.fixture
def checkpoint_dir(tmp_path):
    folder = tmp_path / "ck-cats"
    folder.mkdir()
    (folder / "card.json").write_text(json.dumps({"base": "tiny", "kind": "lora", "steps": 10}))
    return folder
