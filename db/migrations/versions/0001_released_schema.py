"""The schema as released before migrations existed (what ``create_all`` made at 7bd47ef).

A database made by that ``create_all`` (tables present, no ``alembic_version``) is stamped at
this revision by :func:`db.migrate.upgrade` and then upgraded.

Revision ID: 0001
Revises:
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('checkpoints',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('path', sa.String(length=1000), nullable=False),
    sa.Column('base', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('card', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_index(op.f('ix_checkpoints_created_at'), 'checkpoints', ['created_at'], unique=False)
    op.create_table('comparisons',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('prompt', sa.Text(), nullable=False),
    sa.Column('seed', sa.BigInteger(), nullable=False),
    sa.Column('title', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_comparisons_created_at'), 'comparisons', ['created_at'], unique=False)
    op.create_table('finetune_jobs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('base', sa.String(length=64), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('cancel_requested', sa.Boolean(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('requeues', sa.Integer(), nullable=False),
    sa.Column('enqueued_at', sa.DateTime(), nullable=True),
    sa.Column('started_at', sa.DateTime(), nullable=True),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.Column('heartbeat_at', sa.DateTime(), nullable=True),
    sa.Column('worker', sa.String(length=200), nullable=True),
    sa.Column('step', sa.Integer(), nullable=True),
    sa.Column('steps', sa.Integer(), nullable=True),
    sa.Column('fraction', sa.Float(), nullable=False),
    sa.Column('losses', sa.JSON(), nullable=False),
    sa.Column('report', sa.JSON(), nullable=True),
    sa.Column('output_dir', sa.String(length=1000), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('checkpoint_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['checkpoint_id'], ['checkpoints.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_finetune_jobs_created_at'), 'finetune_jobs', ['created_at'], unique=False)
    op.create_index(op.f('ix_finetune_jobs_heartbeat_at'), 'finetune_jobs', ['heartbeat_at'], unique=False)
    op.create_index(op.f('ix_finetune_jobs_status'), 'finetune_jobs', ['status'], unique=False)
    op.create_table('runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('prompt', sa.Text(), nullable=False),
    sa.Column('negative_prompt', sa.Text(), nullable=False),
    sa.Column('model', sa.String(length=64), nullable=False),
    sa.Column('checkpoint_id', sa.Integer(), nullable=True),
    sa.Column('checkpoint_name', sa.String(length=200), nullable=True),
    sa.Column('mode', sa.String(length=16), nullable=False),
    sa.Column('schedule', sa.String(length=64), nullable=False),
    sa.Column('guidance', sa.JSON(), nullable=False),
    sa.Column('seed', sa.BigInteger(), nullable=False),
    sa.Column('frames', sa.Integer(), nullable=False),
    sa.Column('height', sa.Integer(), nullable=False),
    sa.Column('width', sa.Integer(), nullable=False),
    sa.Column('comparison_id', sa.Integer(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('cancel_requested', sa.Boolean(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('requeues', sa.Integer(), nullable=False),
    sa.Column('enqueued_at', sa.DateTime(), nullable=True),
    sa.Column('started_at', sa.DateTime(), nullable=True),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.Column('heartbeat_at', sa.DateTime(), nullable=True),
    sa.Column('worker', sa.String(length=200), nullable=True),
    sa.Column('stage', sa.Integer(), nullable=True),
    sa.Column('stages', sa.Integer(), nullable=True),
    sa.Column('step', sa.Integer(), nullable=True),
    sa.Column('steps', sa.Integer(), nullable=True),
    sa.Column('fraction', sa.Float(), nullable=False),
    sa.Column('load_seconds', sa.Float(), nullable=True),
    sa.Column('total_seconds', sa.Float(), nullable=True),
    sa.Column('tflops', sa.Float(), nullable=True),
    sa.Column('peak_memory_mb', sa.Float(), nullable=True),
    sa.Column('report', sa.JSON(), nullable=True),
    sa.Column('output_path', sa.String(length=1000), nullable=True),
    sa.Column('preview_path', sa.String(length=1000), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['checkpoint_id'], ['checkpoints.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['comparison_id'], ['comparisons.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_runs_checkpoint_id'), 'runs', ['checkpoint_id'], unique=False)
    op.create_index(op.f('ix_runs_comparison_id'), 'runs', ['comparison_id'], unique=False)
    op.create_index(op.f('ix_runs_created_at'), 'runs', ['created_at'], unique=False)
    op.create_index(op.f('ix_runs_heartbeat_at'), 'runs', ['heartbeat_at'], unique=False)
    op.create_index(op.f('ix_runs_model'), 'runs', ['model'], unique=False)
    op.create_index(op.f('ix_runs_status'), 'runs', ['status'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_runs_status'), table_name='runs')
    op.drop_index(op.f('ix_runs_model'), table_name='runs')
    op.drop_index(op.f('ix_runs_heartbeat_at'), table_name='runs')
    op.drop_index(op.f('ix_runs_created_at'), table_name='runs')
    op.drop_index(op.f('ix_runs_comparison_id'), table_name='runs')
    op.drop_index(op.f('ix_runs_checkpoint_id'), table_name='runs')
    op.drop_table('runs')
    op.drop_index(op.f('ix_finetune_jobs_status'), table_name='finetune_jobs')
    op.drop_index(op.f('ix_finetune_jobs_heartbeat_at'), table_name='finetune_jobs')
    op.drop_index(op.f('ix_finetune_jobs_created_at'), table_name='finetune_jobs')
    op.drop_table('finetune_jobs')
    op.drop_index(op.f('ix_comparisons_created_at'), table_name='comparisons')
    op.drop_table('comparisons')
    op.drop_index(op.f('ix_checkpoints_created_at'), table_name='checkpoints')
    op.drop_table('checkpoints')
