"""Where a run's guidance came from, its cancel token (hash), phase and still; the
admin lockout's failure counts shared by every page process (``admin_failures``).

Each step is skipped when its column or table is already there, so a database that a
development build made with ``create_all`` of these models upgrades too.

Revision ID: 0002
Revises: 0001
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

RUN_COLUMNS = (
    ("guidance_source", sa.String(length=32)),
    ("cancel_token_hash", sa.String(length=64)),
    ("phase", sa.String(length=32)),
    ("still_path", sa.String(length=1000)),
)


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    present = {c["name"] for c in inspector.get_columns("runs")}
    for name, type_ in RUN_COLUMNS:
        if name not in present:
            op.add_column("runs", sa.Column(name, type_, nullable=True))
    if not inspector.has_table("admin_failures"):
        op.create_table(
            "admin_failures",
            sa.Column("client", sa.String(length=200), nullable=False),
            sa.Column("failures", sa.JSON(), nullable=False),
            sa.Column("updated_at", sa.DateTime(), nullable=False),
            sa.PrimaryKeyConstraint("client"),
        )


def downgrade() -> None:
    op.drop_table("admin_failures")
    with op.batch_alter_table("runs") as batch:  # SQLite drops columns by copying the table
        for name, _type in reversed(RUN_COLUMNS):
            batch.drop_column(name)
