"""Least-privilege readers: NOLOGIN roles `pipeline_analyst` and `pipeline_dashboard`.

`pipeline_analyst` reads the `analytics` views and nothing else: a BI tool gets a login in it
(`CREATE ROLE metabase LOGIN PASSWORD '...' IN ROLE pipeline_analyst`). Views are read with
their owner's rights, so the raw tables stay closed to it. Default privileges make the views
that later revisions create (run by the same migrating role) readable too.

`pipeline_dashboard` is an analyst that also reads what `pipeline dashboard` shows: the run
history, state and quarantine in `pipeline`, the stream tables it counts and samples for
drift, the job table of the queue, and the schema revision. A revision that adds a stream
table grants it SELECT too (a test reads every declared table as this role).

Roles belong to the whole server, not to this database: another database on the same server
(every test database is cloned on one server, many at once) may have created them already, or
be creating them right now. So they are created only when missing, a concurrent creation is
taken as done, and the downgrade revokes this database's grants but leaves the roles: other
databases and the logins granted them (a BI tool's) may still use them, and a role without
privileges here is harmless. An administrator drops them with `DROP ROLE` once no database
uses them.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

ANALYST = "pipeline_analyst"
DASHBOARD = "pipeline_dashboard"

# Frozen as of this revision: the tables with a `data` column (child tables are not read).
STREAM_TABLES = [
    "afosto.contacts",
    "afosto.shipments",
    "afosto.parcels",
    "afosto.price_groups",
    "afosto.prices",
    "digilocker.issuers",
    "digilocker.doctypes",
    "digilocker.statistics",
    "soho.customers",
    "sparkfly.credentials",
    "valomnia.authorities",
]
SOURCE_SCHEMAS = sorted({table.split(".")[0] for table in STREAM_TABLES})
PIPELINE_TABLES = ["pipeline.sync_runs", "pipeline.stream_state", "pipeline.quarantine"]
QUEUE_JOBS = "pipeline_queue.procrastinate_jobs"


def _create_role(name: str) -> None:
    """Create the role unless it exists. Two databases migrating at once both find it missing;
    the second CREATE then waits for the first and fails on the unique name: that is success."""
    op.execute(
        f"""
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{name}') THEN
                CREATE ROLE {name} NOLOGIN;
            END IF;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN NULL;
            WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'cannot create role {name}: the migrating role needs CREATEROLE'
                USING HINT = 'Let an administrator run CREATE ROLE {name} NOLOGIN; '
                    'then run pipeline db upgrade again.';
        END
        $$
        """
    )


def _grant_membership(role: str, member: str) -> None:
    """Membership is server-wide too: granted once, concurrent grants taken as done."""
    op.execute(
        f"""
        DO $$
        BEGIN
            IF NOT pg_has_role('{member}', '{role}', 'MEMBER') THEN
                GRANT {role} TO {member};
            END IF;
        EXCEPTION
            WHEN unique_violation THEN NULL;
        END
        $$
        """
    )


def upgrade() -> None:
    _create_role(ANALYST)
    _create_role(DASHBOARD)
    _grant_membership(ANALYST, DASHBOARD)

    op.execute(f"GRANT USAGE ON SCHEMA analytics TO {ANALYST}")
    op.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA analytics TO {ANALYST}")
    op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA analytics GRANT SELECT ON TABLES TO {ANALYST}")

    op.execute(f"GRANT USAGE ON SCHEMA pipeline, pipeline_queue TO {DASHBOARD}")
    op.execute(f"GRANT USAGE ON SCHEMA {', '.join(SOURCE_SCHEMAS)} TO {DASHBOARD}")
    tables = [*PIPELINE_TABLES, *STREAM_TABLES, QUEUE_JOBS, "alembic_version"]
    op.execute(f"GRANT SELECT ON {', '.join(tables)} TO {DASHBOARD}")


def downgrade() -> None:
    """Revoke what this database granted; the roles stay (see the module's docstring)."""
    tables = [*PIPELINE_TABLES, *STREAM_TABLES, QUEUE_JOBS, "alembic_version"]
    op.execute(f"REVOKE SELECT ON {', '.join(tables)} FROM {DASHBOARD}")
    op.execute(f"REVOKE USAGE ON SCHEMA {', '.join(SOURCE_SCHEMAS)} FROM {DASHBOARD}")
    op.execute(f"REVOKE USAGE ON SCHEMA pipeline, pipeline_queue FROM {DASHBOARD}")
    op.execute(
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA analytics REVOKE SELECT ON TABLES FROM {ANALYST}"
    )
    op.execute(f"REVOKE SELECT ON ALL TABLES IN SCHEMA analytics FROM {ANALYST}")
    op.execute(f"REVOKE USAGE ON SCHEMA analytics FROM {ANALYST}")
