"""Incremental, restartable syncs from SaaS REST APIs into Postgres."""
