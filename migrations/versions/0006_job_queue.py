"""The job queue of the `queue` execution backend: procrastinate's schema, in `pipeline_queue`.

`[execution] backend = "queue"` runs streams as procrastinate jobs on workers that share this
database. Its tables and functions are the SQL that the pinned procrastinate release ships,
copied beside the migrations (`migrations/sql/procrastinate-<version>.sql`; a test holds the copy
equal to the installed package's), so an upgrade of the library comes with a revision of its
own. They live in their own schema, off the `public` one BI users browse; procrastinate's
connections put `pipeline_queue` first on their search path (`pipeline.queue.app`). The schema
is installed whichever backend is configured, so switching is a configuration change.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

from pathlib import Path

from alembic import op
from sqlalchemy.util import await_only

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

QUEUE_SCHEMA = "pipeline_queue"
SCHEMA_SQL = Path(__file__).resolve().parent.parent / "sql" / "procrastinate-3.10.0.sql"


def _execute_script(sql: str) -> None:
    """Many statements with `$$` bodies at once: asyncpg's simple query protocol takes a whole
    script, where a prepared statement takes one."""
    driver = op.get_bind().connection.driver_connection
    await_only(driver.execute(sql))


def upgrade() -> None:
    op.execute(f"CREATE SCHEMA {QUEUE_SCHEMA}")
    # Transaction-local: the functions and types land in the queue schema, and the rest of
    # this upgrade's transaction is unaffected afterwards.
    op.execute(f"SET LOCAL search_path TO {QUEUE_SCHEMA}")
    _execute_script(SCHEMA_SQL.read_text(encoding="utf-8"))
    op.execute("SET LOCAL search_path TO DEFAULT")


def downgrade() -> None:
    op.execute(f"DROP SCHEMA {QUEUE_SCHEMA} CASCADE")
