"""What a neighbour on the database must not be able to hide: skipped runs, held deletions,
and who asked for a job to be aborted.

- `sync_runs.status` gains `skipped` (the stream did not run: its advisory lock was held, by
  another run or by any other session, which needs no privilege to take it) and `held` (the
  run succeeded but would have marked more rows deleted than `max_delete_fraction` allows;
  the deletions were not applied). `held_deletes` counts those rows.
- `pipeline.job_aborts` records, for every queue job whose abort is requested, the role, the
  application, the client address and the backend that set `abort_requested` in the job table.
  A worker acts on an abort only when that column says so (a NOTIFY alone is a hint any login
  can send), and a run aborted on request names who asked. The trigger's function runs with
  its owner's rights, so whoever may update the job table gets the row written without any
  right on `pipeline` of their own.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

STATUSES_BEFORE = "('running', 'succeeded', 'failed', 'interrupted')"
STATUSES = "('running', 'succeeded', 'failed', 'interrupted', 'skipped', 'held')"
DASHBOARD = "pipeline_dashboard"
JOBS = "pipeline_queue.procrastinate_jobs"


def upgrade() -> None:
    op.drop_constraint("sync_runs_status", "sync_runs", schema="pipeline")
    op.create_check_constraint(
        "sync_runs_status", "sync_runs", f"status in {STATUSES}", schema="pipeline"
    )
    op.add_column(
        "sync_runs",
        sa.Column("held_deletes", sa.BigInteger, nullable=False, server_default="0"),
        schema="pipeline",
    )
    op.create_table(
        "job_aborts",
        sa.Column("job_id", sa.BigInteger, primary_key=True),
        sa.Column("requested_by", sa.Text, nullable=False),
        sa.Column("application_name", sa.Text),
        sa.Column("client_addr", pg.INET),
        sa.Column("backend_pid", sa.Integer),
        sa.Column(
            "requested_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        schema="pipeline",
        comment="Who set abort_requested on a queue job: the run it stopped names them.",
    )
    op.execute(
        """
        CREATE FUNCTION pipeline.note_job_abort() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
        BEGIN
            INSERT INTO pipeline.job_aborts
                (job_id, requested_by, application_name, client_addr, backend_pid)
            VALUES (NEW.id, session_user, current_setting('application_name', true),
                    inet_client_addr(), pg_backend_pid())
            ON CONFLICT (job_id) DO NOTHING;
            RETURN NEW;
        END
        $$
        """
    )
    op.execute("REVOKE ALL ON FUNCTION pipeline.note_job_abort() FROM PUBLIC")
    op.execute(
        f"CREATE TRIGGER pipeline_note_job_abort AFTER UPDATE OF abort_requested ON {JOBS} "
        "FOR EACH ROW WHEN (NEW.abort_requested AND NOT OLD.abort_requested) "
        "EXECUTE FUNCTION pipeline.note_job_abort()"
    )
    op.execute(f"GRANT SELECT ON pipeline.job_aborts TO {DASHBOARD}")


def downgrade() -> None:
    op.execute(f"DROP TRIGGER pipeline_note_job_abort ON {JOBS}")
    op.execute("DROP FUNCTION pipeline.note_job_abort()")
    op.drop_table("job_aborts", schema="pipeline")
    op.execute(
        "UPDATE pipeline.sync_runs SET status = CASE status WHEN 'held' THEN 'succeeded' "
        "ELSE 'failed' END WHERE status IN ('skipped', 'held')"
    )
    op.drop_column("sync_runs", "held_deletes", schema="pipeline")
    op.drop_constraint("sync_runs_status", "sync_runs", schema="pipeline")
    op.create_check_constraint(
        "sync_runs_status", "sync_runs", f"status in {STATUSES_BEFORE}", schema="pipeline"
    )
