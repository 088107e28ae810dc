"""jobs.action: the inline action (endpoint, model, prompts, windows, destinations) of a job made by
``POST /jobs`` with its own prompts instead of a rule from the rules file.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    # a nullable column without a default: a plain ALTER TABLE ADD COLUMN on both backends
    op.add_column("jobs", sa.Column("action", JSON, nullable=True))


def downgrade() -> None:
    # Not batch mode: on SQLite that copies jobs into a new table and drops the old one, and with
    # foreign keys on, the drop cascades into job_stages, results and deliveries. SQLite >= 3.35
    # drops a plain column in place.
    op.drop_column("jobs", "action")
