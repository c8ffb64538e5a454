"""Temporary stand-in for the service layer: the page's tabs already call ``service.<name>``."""
from workers.api import *  # noqa: F401,F403
from workers.api import (  # noqa: F401
    AuthError, ConflictError, ForbiddenError, NotFoundError, UnauthorizedError, ValidationError,
    allowed_roots, cancel_job, cancel_run, delete_checkpoint, delete_run, get_checkpoint, get_comparison,
    get_job, get_run, list_checkpoints, list_jobs, list_runs, register_checkpoint, rename_checkpoint, rerun,
    shipped_pyramidal, submit_comparison, submit_job, submit_run,
)
from workers.runner import preview_path  # noqa: F401
