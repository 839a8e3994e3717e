"""`pipeline dashboard`: read-only pages over the run history, state, quarantine, schema drift
and jobs, each with a JSON twin under `/api` for scripts.

It reads with a read-only engine (every transaction READ ONLY) and needs no write privilege:
a login in the `pipeline_dashboard` role (revision 0007) is enough. Charts are SVG rendered
on the server; the pages load nothing from elsewhere, so they work offline.
"""

from pipeline.dashboard.app import build_app, serve

__all__ = ["build_app", "serve"]
