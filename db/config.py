"""Folders under the data folder (``PWAN_DATA_DIR``, see :mod:`settings`), created on first ask."""
from __future__ import annotations

from pathlib import Path

from settings import get_settings


def data_dir() -> Path:
    """The data folder (created if missing), as an absolute path."""
    path = get_settings().data_dir
    path.mkdir(parents=True, exist_ok=True)
    return path


def outputs_dir() -> Path:
    """Folder for finished videos (``<run id>.mp4``) and previews."""
    path = data_dir() / "outputs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def checkpoints_dir() -> Path:
    """Default folder for checkpoints written by finetune jobs."""
    path = data_dir() / "checkpoints"
    path.mkdir(parents=True, exist_ok=True)
    return path
