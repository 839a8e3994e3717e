"""docker-compose.yml and the Dockerfile, checked against the code they run.

No Docker needed: the files are parsed, and every command a container runs is parsed by the
real CLI parser, so renaming a subcommand or a database credential breaks a test here rather
than a deployment.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from pipeline.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
EXAMPLE = ROOT / "pipeline.example.toml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _app_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The services built from this repository (everything but third-party images)."""
    return {name: body for name, body in services.items() if "build" in body}


def _environment(service: dict[str, Any]) -> dict[str, str | None]:
    """Compose accepts a mapping or a list of KEY=VALUE (or bare KEY) strings."""
    env = service.get("environment", {})
    if isinstance(env, list):
        return {
            key: (value if sep else None)
            for key, sep, value in (item.partition("=") for item in env)
        }
    return {key: (None if value is None else str(value)) for key, value in env.items()}


def _command(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def _mounts(service: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) for the short and the long volume syntax."""
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            mounts.append(
                (volume["source"], volume["target"], bool(volume.get("read_only", False)))
            )
            continue
        source, target, *options = volume.split(":")
        mounts.append((source, target, "ro" in ",".join(options).split(",")))
    return mounts


def _depends_on(service: dict[str, Any]) -> dict[str, str]:
    depends = service.get("depends_on", {})
    if isinstance(depends, list):  # the short form only waits for "started"
        return dict.fromkeys(depends, "service_started")
    return {name: body.get("condition", "service_started") for name, body in depends.items()}


# ---- compose ---------------------------------------------------------------------------------


def test_uses_the_compose_spec_without_version(compose: dict[str, Any]) -> None:
    assert "version" not in compose
    assert {"postgres", "migrate", "scheduler", "worker", "dashboard"} <= set(compose["services"])


def test_postgres_16_with_named_volume_and_healthcheck(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    postgres = services["postgres"]
    image, _, tag = postgres["image"].partition(":")
    assert image == "postgres"
    assert tag.split(".")[0].split("-")[0] == "16"

    data = [m for m in _mounts(postgres) if m[1] == "/var/lib/postgresql/data"]
    assert len(data) == 1, "the data folder must be a volume"
    source = data[0][0]
    assert "/" not in source and not source.startswith("."), "a named volume, not a bind mount"
    assert source in (compose.get("volumes") or {}), "the named volume is declared at top level"

    check = postgres["healthcheck"]
    test = check["test"]
    words = shlex.split(test) if isinstance(test, str) else [str(w) for w in test]
    assert "pg_isready" in words
    env = _environment(postgres)
    assert words[words.index("-U") + 1] == env["POSTGRES_USER"]
    assert words[words.index("-d") + 1] == env["POSTGRES_DB"]
    for key in ("interval", "timeout", "retries"):
        assert key in check, f"healthcheck.{key} is missing"


def test_migrate_upgrades_once_postgres_is_healthy(services: dict[str, dict[str, Any]]) -> None:
    migrate = services["migrate"]

    args = build_parser().parse_args(_command(migrate))

    assert (args.command, args.db_command) == ("db", "upgrade")
    assert _depends_on(migrate)["postgres"] == "service_healthy"
    assert migrate.get("restart") == "no"  # a one-shot; quoted, or YAML reads `no` as false


def test_scheduler_waits_for_healthy_postgres_and_finished_migrations(
    services: dict[str, dict[str, Any]],
) -> None:
    scheduler = services["scheduler"]

    depends = _depends_on(scheduler)

    assert depends["postgres"] == "service_healthy"
    assert depends["migrate"] == "service_completed_successfully"
    assert scheduler.get("init") is True, "a real PID 1 forwards SIGTERM to the pipeline"
    assert scheduler.get("restart") == "unless-stopped"
    assert scheduler["command"][0] == "schedule"


def test_scheduler_and_workers_use_the_queue_and_workers_scale(
    services: dict[str, dict[str, Any]],
) -> None:
    worker = services["worker"]
    args = build_parser().parse_args(_command(worker))
    assert args.command == "worker" and args.concurrency >= 1
    assert _depends_on(worker) == _depends_on(services["scheduler"])
    assert worker.get("init") is True and worker.get("restart") == "unless-stopped"
    # `--scale worker=N` refuses a fixed container name or a published host port.
    assert "container_name" not in worker and "ports" not in worker
    assert _environment(worker) == _environment(services["scheduler"])
    assert _mounts(worker) == _mounts(services["scheduler"])
    for name in ("scheduler", "worker"):
        assert _environment(services[name])["PIPELINE_BACKEND"] == "queue", name
    # Docker waits this long after SIGTERM: more than the worker's own grace.
    grace = float(_command(worker)[_command(worker).index("--grace") + 1])
    assert int(worker["stop_grace_period"].rstrip("s")) > grace


@pytest.mark.parametrize("name", ["scheduler", "worker"])
def test_scheduler_and_workers_serve_metrics_inside_the_network(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    args = build_parser().parse_args(_command(services[name]))
    # Every replica on one port, reachable from Prometheus in the network; none published.
    assert (args.metrics_port, args.metrics_host) == (9108, "0.0.0.0")
    assert "ports" not in services[name]


def test_the_dashboard_binds_the_container_with_a_token_and_publishes_on_loopback(
    services: dict[str, dict[str, Any]],
) -> None:
    from pipeline.dashboard.auth import TOKEN_ENV, check_bind, is_loopback
    from pipeline.dashboard.hosts import HOSTS_ENV

    dashboard = services["dashboard"]
    args = build_parser().parse_args(_command(dashboard))
    assert args.command == "dashboard"
    env = _environment(dashboard)
    # A bind beyond loopback refuses to start without the token: it comes from the host.
    if not is_loopback(args.host):
        assert TOKEN_ENV in env and env[TOKEN_ENV] is None, "pass the token from the host"
        check_bind(args.host, "a token from the host")
    # The config's ${VARIABLES} resolve as they do for the scheduler.
    own = {TOKEN_ENV, HOSTS_ENV}
    assert {k: v for k, v in env.items() if k not in own} == _environment(services["scheduler"])
    assert _mounts(dashboard) == _mounts(services["scheduler"])
    assert _depends_on(dashboard) == _depends_on(services["scheduler"])
    assert dashboard.get("init") is True
    for mapping in dashboard.get("ports", []):
        host_ip, _, container_port = str(mapping).split(":")
        assert host_ip == "127.0.0.1", "publish on the host's loopback only"
        assert int(container_port) == args.port
    assert str(dashboard.get("restart", "no")).startswith(("on-failure", "unless-stopped"))


def test_the_dashboard_answers_the_host_browser_and_prometheus_in_the_network(
    services: dict[str, dict[str, Any]],
) -> None:
    """Its Host check (DNS rebinding) must let through the names it is reached by: the host's
    browser through the published loopback port, and Prometheus at `dashboard:8765` (the
    service name) inside the network; the wildcard bind itself is no name."""
    from pipeline.dashboard.hosts import allowed_names, configured_names, host_of

    dashboard = services["dashboard"]
    args = build_parser().parse_args(_command(dashboard))
    env = {k: v for k, v in _environment(dashboard).items() if v is not None}
    allowed = allowed_names(args.host, configured_names(args.allow_host, env))
    published = [str(m).split(":")[1] for m in dashboard.get("ports", [])]
    for host in ("127.0.0.1", "localhost", "dashboard"):
        for port in [str(args.port), *published]:
            assert host_of(f"{host}:{port}") in allowed, f"{host}:{port} would get 421"
    assert host_of(f"{args.host}:{args.port}") not in allowed
    assert host_of("evil.example:8765") not in allowed


@pytest.mark.parametrize("name", ["migrate", "scheduler", "worker", "dashboard"])
def test_app_services_build_this_repository(services: dict[str, dict[str, Any]], name: str) -> None:
    build = services[name]["build"]
    context = build["context"] if isinstance(build, dict) else build
    assert Path(context) == Path(".")


def test_every_app_command_is_a_real_subcommand(services: dict[str, dict[str, Any]]) -> None:
    app = _app_services(services)
    assert set(app) >= {"migrate", "scheduler", "worker"}
    for name, service in app.items():
        command = _command(service)
        try:
            args = build_parser().parse_args(command)
        except SystemExit:
            pytest.fail(f"services.{name}.command {command} is not a `pipeline` command")
        assert callable(args.handler), name


def test_database_url_points_at_the_postgres_service(services: dict[str, dict[str, Any]]) -> None:
    pg_env = _environment(services["postgres"])
    for name, service in _app_services(services).items():
        url = _environment(service).get("DATABASE_URL")
        assert url, f"services.{name} has no DATABASE_URL (it would start an embedded Postgres)"
        parts = urlsplit(url)
        assert parts.scheme in ("postgresql", "postgres"), name
        assert parts.hostname == "postgres", f"{name}: host must be the postgres service"
        assert parts.port in (None, 5432), name
        assert parts.username == pg_env["POSTGRES_USER"], name
        assert parts.password == pg_env["POSTGRES_PASSWORD"], name
        assert parts.path.lstrip("/") == pg_env["POSTGRES_DB"], name


def test_pipeline_config_is_inside_a_read_only_mount(services: dict[str, dict[str, Any]]) -> None:
    scheduler = services["scheduler"]
    config = PurePosixPath(_environment(scheduler)["PIPELINE_CONFIG"] or "")
    assert config.is_absolute()

    mounts = [
        (source, ro)
        for source, target, ro in _mounts(scheduler)
        if config == PurePosixPath(target) or PurePosixPath(target) in config.parents
    ]

    assert mounts, f"PIPELINE_CONFIG={config} is not inside any mounted volume"
    source, read_only = mounts[0]
    assert read_only, "the container has no reason to write its configuration"
    assert source in ("./pipeline.toml", "pipeline.toml", "./config", "config")


def test_scheduler_receives_every_secret_the_example_references(
    services: dict[str, dict[str, Any]],
) -> None:
    """Each ${VAR} the example config uses is passed through from the host, never written here."""
    # Values of keys, set or commented out; not database.url, which DATABASE_URL replaces here.
    values = re.findall(
        r"^(?:# )?(?!url )[a-z_]+ = (.*)$", EXAMPLE.read_text(encoding="utf-8"), re.MULTILINE
    )
    referenced = {name for value in values for name in re.findall(r"\$\{(\w+)\}", value)}
    assert {"SOHO_TOKEN", "VALOMNIA_USER", "VALOMNIA_PASSWORD"} <= referenced
    env = _environment(services["scheduler"])

    assert referenced <= set(env), f"not passed to the scheduler: {referenced - set(env)}"
    for name in referenced:
        assert env[name] in (None, f"${{{name}}}"), f"{name} must come from the host environment"


# ---- Dockerfile ------------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), with comments dropped and continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    result = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def _exec_form(value: str) -> list[str]:
    parsed = json.loads(value)
    assert isinstance(parsed, list), "use the exec form (a JSON list)"
    return parsed


def test_dockerfile_base_image_is_python_311() -> None:
    froms = [args for keyword, args in _instructions() if keyword == "FROM"]
    assert froms, "no FROM"
    assert froms[-1].split()[0].startswith("python:3.11")


def test_dockerfile_installs_the_project_editable() -> None:
    """Editable, so pipeline/db.py finds the top-level migrations/ folder at /app/migrations."""
    instructions = _instructions()
    workdir = [args for keyword, args in instructions if keyword == "WORKDIR"]
    assert workdir and workdir[-1] == "/app"
    assert any(
        keyword in ("COPY", "ADD") and args.split()[0] == "." for keyword, args in instructions
    )
    runs = [args for keyword, args in instructions if keyword == "RUN"]
    assert any(re.search(r"pip install .*-e \.(\s|$)", run) for run in runs)
    assert any("--no-cache-dir" in run for run in runs if "pip install" in run)
    assert (ROOT / "migrations" / "env.py").exists()


def test_dockerfile_entrypoint_is_the_console_script() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "scripts"
    ]
    instructions = _instructions()
    entrypoint = [args for keyword, args in instructions if keyword == "ENTRYPOINT"]
    cmd = [args for keyword, args in instructions if keyword == "CMD"]

    assert _exec_form(entrypoint[-1]) == ["pipeline"]
    assert scripts["pipeline"] == "pipeline.cli:run"
    assert _exec_form(cmd[-1]) == ["--help"]


def test_dockerfile_runs_as_a_non_root_user() -> None:
    instructions = _instructions()
    users = [(i, args) for i, (keyword, args) in enumerate(instructions) if keyword == "USER"]
    assert users, "no USER: the container would run as root"
    last_index, user = users[-1]
    assert user.split(":")[0] not in ("root", "0")
    last_run = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "RUN")
    assert last_index > last_run, "USER must come after the installing RUN steps"


def test_dockerignore_keeps_local_state_out_of_the_image() -> None:
    patterns = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    for needed in (".venv", ".git", ".pipeline", "bench/results", "pipeline.toml"):
        assert needed in patterns, f"{needed} is not in .dockerignore"
    assert any("__pycache__" in p for p in patterns)
