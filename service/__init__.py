"""The service: what the page and the REST API call.

Runs and comparisons (:mod:`service.runs`), checkpoints (:mod:`service.checkpoints`), finetune
jobs (:mod:`service.jobs`), the folders a request may name (:mod:`service.paths`), and the
errors every call raises with their HTTP statuses (:mod:`service.errors`). Every call checks its
input before anything is written or sent to a queue; results are plain dicts, ready for JSON.

    import service
    run = service.submit_run("a red circle moves to the right", model="tiny", schedule="2-2-1")
    service.get_run(run["id"])["status"]
"""
from core.pipeline import MAX_PROMPT_CHARS, MAX_SEED
from service.checkpoints import (
    CHECKPOINT_KINDS,
    delete_checkpoint,
    get_checkpoint,
    list_checkpoints,
    register_checkpoint,
    register_shipped_checkpoints,
    rename_checkpoint,
)
from service.checks import MAX_NAME_CHARS, MAX_PAGE, MAX_ROW_ID, MAX_TOKEN_CHARS
from service.errors import (
    HTTP_STATUS,
    AuthError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    UnauthorizedError,
    ValidationError,
    error_field,
    http_status,
    is_user_error,
)
from service.jobs import cancel_job, get_job, list_jobs, submit_job
from service.paths import allowed_roots, confine
from service.runs import (
    baseline_schedule,
    cancel_run,
    check_cancel_token,
    decoded_video_path,
    delete_run,
    get_comparison,
    get_run,
    list_runs,
    new_cancel_token,
    preview_path,
    queue_counts,
    rerun,
    shipped_pyramidal,
    side_by_side_path,
    submit_comparison,
    submit_run,
    tiny_output_path,
    token_hash,
)

__all__ = [
    # errors
    "AuthError", "ConflictError", "ForbiddenError", "HTTP_STATUS", "NotFoundError",
    "UnauthorizedError", "ValidationError", "error_field", "http_status", "is_user_error",
    # limits
    "MAX_NAME_CHARS", "MAX_PAGE", "MAX_PROMPT_CHARS", "MAX_ROW_ID", "MAX_SEED", "MAX_TOKEN_CHARS",
    # runs and comparisons
    "baseline_schedule", "cancel_run", "check_cancel_token", "delete_run",
    "get_comparison", "get_run", "list_runs", "new_cancel_token", "preview_path", "queue_counts",
    "rerun", "shipped_pyramidal", "side_by_side_path", "submit_comparison", "submit_run", "token_hash",
    "decoded_video_path", "tiny_output_path",
    # checkpoints
    "CHECKPOINT_KINDS", "delete_checkpoint", "get_checkpoint", "list_checkpoints",
    "register_checkpoint", "register_shipped_checkpoints", "rename_checkpoint",
    # finetune jobs
    "cancel_job", "get_job", "list_jobs", "submit_job",
    # allowed paths
    "allowed_roots", "confine",
]
