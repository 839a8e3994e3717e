# The `pipeline` command in a container. docker-compose.yml runs it against a Postgres service:
#   docker build -t pipeline .   &&   docker run --rm pipeline --help
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A fixed uid, so files written to mounted volumes have a predictable owner.
RUN groupadd --system --gid 10001 pipeline \
    && useradd --system --uid 10001 --gid pipeline --create-home --home-dir /home/pipeline pipeline

WORKDIR /app
COPY . /app

# Editable on purpose: pipeline/db.py finds the top-level migrations/ folder next to the
# package (Path(__file__).parent.parent / "migrations"), which a regular install would not copy.
# .pipeline/ is the only folder the app writes to (the embedded Postgres, when no DATABASE_URL).
RUN pip install --no-cache-dir -e . \
    && mkdir -p /app/.pipeline \
    && chown pipeline:pipeline /app/.pipeline

USER pipeline

ENTRYPOINT ["pipeline"]
CMD ["--help"]
