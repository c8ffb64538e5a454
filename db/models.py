"""Tables: runs, comparisons, checkpoints and finetune jobs.

Times are naive UTC ``datetime`` values (the same on SQLite and PostgreSQL); :func:`to_dict`
turns a row into plain JSON-ready data with ISO 8601 ``...Z`` strings.
"""
from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    inspect,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> dt.datetime:
    """Now, as naive UTC (what every time column holds)."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Status(str, enum.Enum):
    """Life of a run or a finetune job: queued -> running -> done | failed | cancelled."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


FINAL_STATUSES = frozenset({Status.DONE.value, Status.FAILED.value, Status.CANCELLED.value})
ALL_STATUSES = tuple(s.value for s in Status)


class Base(DeclarativeBase):
    type_annotation_map = {
        dict[str, Any]: JSON,
        list[float]: JSON,
        list[Any]: JSON,
        dt.datetime: DateTime(),
    }


class _Timestamps:
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Comparison(_Timestamps, Base):
    """Two or more runs that share a prompt and a seed (e.g. original vs pyramidal)."""

    __tablename__ = "comparisons"

    id: Mapped[int] = mapped_column(primary_key=True)
    prompt: Mapped[str] = mapped_column(Text)
    seed: Mapped[int] = mapped_column(BigInteger)
    title: Mapped[str] = mapped_column(String(200), default="")

    runs: Mapped[list[Run]] = relationship(back_populates="comparison", order_by="Run.id")


class Checkpoint(_Timestamps, Base):
    """A trained transformer (full weights or a LoRA) over a base preset, kept in a folder."""

    __tablename__ = "checkpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    path: Mapped[str] = mapped_column(String(1000))
    base: Mapped[str] = mapped_column(String(64))  # base model preset
    kind: Mapped[str] = mapped_column(String(16), default="full")  # full | lora
    card: Mapped[dict[str, Any]] = mapped_column(default=dict)  # model card: training, metrics


class Run(_Timestamps, Base):
    """One text-to-video generation. The row is the truth; the broker only carries its id."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(primary_key=True)

    # What to generate.
    prompt: Mapped[str] = mapped_column(Text)
    negative_prompt: Mapped[str] = mapped_column(Text, default="")
    model: Mapped[str] = mapped_column(String(64), index=True)  # preset
    checkpoint_id: Mapped[int | None] = mapped_column(
        ForeignKey("checkpoints.id", ondelete="SET NULL"), index=True
    )
    checkpoint_name: Mapped[str | None] = mapped_column(String(200))  # kept if the row goes
    mode: Mapped[str] = mapped_column(String(16))  # original | pyramidal
    schedule: Mapped[str] = mapped_column(String(64))
    guidance: Mapped[list[float]] = mapped_column(default=list)  # one value per stage
    # where the guidance came from: "request", "checkpoint card", "preset card" or "default"
    guidance_source: Mapped[str | None] = mapped_column(String(32))
    seed: Mapped[int] = mapped_column(BigInteger)
    frames: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    # what decodes the final video: "full" (the VAE), "tiny" (the tiny decoder) or "both"
    decoder: Mapped[str] = mapped_column(String(16), default="full", server_default="full")
    comparison_id: Mapped[int | None] = mapped_column(
        ForeignKey("comparisons.id", ondelete="SET NULL"), index=True
    )

    # Where it is.
    status: Mapped[str] = mapped_column(String(16), default=Status.QUEUED.value, index=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # SHA-256 (hex) of the secret cancel token handed to the submitter; never returned by the API
    cancel_token_hash: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # executions started
    requeues: Mapped[int] = mapped_column(Integer, default=0)  # re-enqueued after a lost worker
    enqueued_at: Mapped[dt.datetime | None]
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(index=True)
    worker: Mapped[str | None] = mapped_column(String(200))

    # Progress (stage is 0-based, step 1-based within the stage, fraction 0..1 overall).
    stage: Mapped[int | None] = mapped_column(Integer)
    stages: Mapped[int | None] = mapped_column(Integer)
    step: Mapped[int | None] = mapped_column(Integer)
    steps: Mapped[int | None] = mapped_column(Integer)
    fraction: Mapped[float] = mapped_column(Float, default=0.0)
    # what the run is doing: "loading", "denoising", "decoding", "writing video" (None before it starts)
    phase: Mapped[str | None] = mapped_column(String(32))

    # Results.
    load_seconds: Mapped[float | None] = mapped_column(Float)
    total_seconds: Mapped[float | None] = mapped_column(Float)
    tflops: Mapped[float | None] = mapped_column(Float)
    peak_memory_mb: Mapped[float | None] = mapped_column(Float)
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # seconds per phase and stage...
    output_path: Mapped[str | None] = mapped_column(String(1000))
    preview_path: Mapped[str | None] = mapped_column(String(1000))
    still_path: Mapped[str | None] = mapped_column(String(1000))  # a small still of the finished video
    error: Mapped[str | None] = mapped_column(Text)

    comparison: Mapped[Comparison | None] = relationship(back_populates="runs")
    checkpoint: Mapped[Checkpoint | None] = relationship()

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES


class AdminFailure(Base):
    """Wrong admin passwords of one client, shared by every page process (the lockout)."""

    __tablename__ = "admin_failures"

    client: Mapped[str] = mapped_column(String(200), primary_key=True)
    failures: Mapped[list[Any]] = mapped_column(default=list)  # times (unix seconds) of recent failures
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class FinetuneJob(_Timestamps, Base):
    """An admin finetune (or distillation) job on the ``train`` queue."""

    __tablename__ = "finetune_jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))  # name of the checkpoint it will register
    base: Mapped[str] = mapped_column(String(64))  # base model preset
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)  # training config as given

    status: Mapped[str] = mapped_column(String(16), default=Status.QUEUED.value, index=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    requeues: Mapped[int] = mapped_column(Integer, default=0)
    enqueued_at: Mapped[dt.datetime | None]
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(index=True)
    worker: Mapped[str | None] = mapped_column(String(200))

    step: Mapped[int | None] = mapped_column(Integer)
    steps: Mapped[int | None] = mapped_column(Integer)
    fraction: Mapped[float] = mapped_column(Float, default=0.0)
    losses: Mapped[list[Any]] = mapped_column(default=list)  # e.g. [{"step": 10, "loss": 0.1}]
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    output_dir: Mapped[str | None] = mapped_column(String(1000))
    error: Mapped[str | None] = mapped_column(Text)
    checkpoint_id: Mapped[int | None] = mapped_column(
        ForeignKey("checkpoints.id", ondelete="SET NULL")
    )

    checkpoint: Mapped[Checkpoint | None] = relationship()


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat(timespec="milliseconds") + "Z"
    return value


#: Columns that never leave the database layer (secrets).
PRIVATE_COLUMNS = frozenset({"cancel_token_hash"})


def to_dict(row: Base) -> dict[str, Any]:
    """The row's columns as plain data (times as ISO 8601 UTC strings), secrets left out."""
    return {attr.key: _jsonable(getattr(row, attr.key)) for attr in inspect(row).mapper.column_attrs
            if attr.key not in PRIVATE_COLUMNS}
