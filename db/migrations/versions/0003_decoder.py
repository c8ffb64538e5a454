"""The decoder a run's final video is decoded with: ``runs.decoder`` ("full", "tiny" or "both"),
"full" for every run made before it existed.

Skipped when the column is already there, so a database that a development build made with
``create_all`` of these models upgrades too.

Revision ID: 0003
Revises: 0002
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    present = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("runs")}
    if "decoder" not in present:
        op.add_column("runs", sa.Column("decoder", sa.String(length=16), nullable=False, server_default="full"))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:  # SQLite drops columns by copying the table
        batch.drop_column("decoder")
