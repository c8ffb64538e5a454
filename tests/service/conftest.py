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


def distilled_card(base: str = "tiny", name: str = "tiny-distilled") -> dict:
    """The card of a distilled (few-step) student as ``finetune.distill`` writes it: a 2-2-1 recipe
    with guidance baked in."""
    from core.fewstep import FewStepRecipe

    recipe = FewStepRecipe.build("2-2-1", 3.0, [0.8, 0.5]).to_dict()
    return {"base": base, "kind": "full", "name": name, "trained_for": "few-step", "recipe": recipe,
            "schedule": "2-2-1", "stages": 3, "boundaries": recipe["boundaries"], "guidance": 1.0,
            "label": "2-2-1, 5 steps, guidance baked in, DMD-PT*", "method": "dmd-pt-star"}


@pytest.fixture
def distilled_dir(tmp_path):
    """A distilled student's checkpoint folder over ``tiny`` (its card only: nothing runs it here)."""
    folder = tmp_path / "tiny-distilled"
    folder.mkdir()
    (folder / "card.json").write_text(json.dumps(distilled_card()))
    return folder


@pytest.fixture
def teacher_dir(tmp_path):
    """A pyramidal checkpoint folder over ``tiny`` (its card only), a distillation's teacher."""
    folder = tmp_path / "tiny-teacher"
    folder.mkdir()
    (folder / "card.json").write_text(json.dumps({"base": "tiny", "kind": "full", "trained_for": "pyramidal",
                                                  "boundaries": [0.8, 0.5]}))
    return folder
