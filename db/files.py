"""Where each row's files live in the data folder: a run's videos and still, a job's checkpoint.

One rule shared by the worker that writes the files and the service that serves or deletes them,
so neither needs to import the other.
"""
from __future__ import annotations

import re
from pathlib import Path

from db.config import checkpoints_dir, outputs_dir


def output_path(run_id: int) -> Path:
    """The finished video of a run."""
    return outputs_dir() / f"{run_id}.mp4"


def tiny_output_path(run_id: int) -> Path:
    """The tiny decoder's video of a run decoded both ways (``decoder="both"``)."""
    return outputs_dir() / f"{run_id}.tiny.mp4"


def preview_path(run_id: int) -> Path:
    """The low-resolution preview a pyramidal run writes after its first stage."""
    return outputs_dir() / f"{run_id}.preview.mp4"


def still_path(run_id: int) -> Path:
    """The small JPEG History shows beside a finished run."""
    return outputs_dir() / f"{run_id}.still.jpg"


def side_by_side_path(a_id: int, b_id: int) -> Path:
    """The labelled side-by-side video of two runs."""
    return outputs_dir() / f"side-by-side-{a_id}-{b_id}.mp4"


def default_out_dir(name: str) -> str:
    """Where a finetune job named ``name`` writes its checkpoint when it names no folder:
    ``<PWAN_DATA_DIR>/checkpoints/<name as a file name>``."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "checkpoint"
    return str(checkpoints_dir() / slug)
