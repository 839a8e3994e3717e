"""pipeline.toml + environment -> validated, frozen settings.

The file shape is a public interface (see `pipeline.example.toml`). Validation happens before
any work starts, and every problem is reported as one line naming the file, the key and the
fix, so a nightly job fails at once instead of half-way through a run.

Each source module contributes its own settings model (a subclass of `SourceSettings`), so a
source's credentials are declared next to the source and checked here by the same rules.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import BaseModel, ValidationError

from pipeline.errors import ConfigError
from pipeline.settings import ExecutionSettings, SourceSettings, StreamSettings

if TYPE_CHECKING:
    from pipeline.streams import SourceSpec

DEFAULT_CONFIG_NAME = "pipeline.toml"
DEFAULT_EMBEDDED_DIR = ".pipeline/pgdata"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class SourceConfig:
    """A validated source instance (`[sources.<name>]`): its type (the source system; the
    instance name when `type` is not given), its settings, and each known stream's."""

    name: str
    settings: SourceSettings
    streams: Mapping[str, StreamSettings]
    type: str = ""

    def __post_init__(self) -> None:
        if not self.type:
            object.__setattr__(self, "type", self.name)


@dataclass(frozen=True)
class Settings:
    """Everything a run needs, resolved; only the CLI builds it."""

    path: Path | None
    database_url: str | None
    embedded_dir: Path
    sources: Mapping[str, SourceConfig] = field(default_factory=dict)
    # Where the database comes from, as a person fixing it must be told (see `pipeline.dberrors`).
    database_setting: str = "DATABASE_URL"
    execution: ExecutionSettings = field(default_factory=ExecutionSettings)

    def secret_values(self) -> list[str]:
        values = [v for src in self.sources.values() for v in src.settings.secret_values()]
        if self.database_url and (password := urlsplit(self.database_url).password):
            values.append(password)
        return values


def resolve_config_path(explicit: str | None, environ: Mapping[str, str]) -> Path | None:
    """--config, then PIPELINE_CONFIG, then ./pipeline.toml if it exists."""
    if explicit:
        return Path(explicit)
    if environ.get("PIPELINE_CONFIG"):
        return Path(environ["PIPELINE_CONFIG"])
    default = Path(DEFAULT_CONFIG_NAME)
    return default if default.exists() else None


def load_settings(
    path: Path | None,
    environ: Mapping[str, str],
    sources: Mapping[str, SourceSpec],
) -> Settings:
    """Read, expand and validate the configuration; raise ConfigError with one clear line."""
    if path is None:
        raw: dict[str, Any] = {}
        label = "(no config file)"
    else:
        label = str(path)
        _check_config_file(path, label)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(
                f"{label}: file not found; pass --config PATH, set PIPELINE_CONFIG, or copy "
                "pipeline.example.toml to pipeline.toml"
            ) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(
                f"{label}: not valid TOML ({exc}); fix the syntax at that line"
            ) from None
        except UnicodeDecodeError:
            raise ConfigError(f"{label}: not UTF-8 text; save the file as UTF-8") from None
        except OSError as exc:
            # A folder or an unreadable file would otherwise end in a traceback.
            raise ConfigError(
                f"{label}: cannot read the file ({exc.strerror or exc}); pass --config with a "
                "readable pipeline.toml"
            ) from None
    raw = _expand_env(raw, environ, label, ())
    return _validate(raw, environ, label, path, sources)


MAX_CONFIG_BYTES = 64 * 1024 * 1024  # 2,500 accounts' tables are a few MB; more is a mistake


def _check_config_file(path: Path, label: str) -> None:
    """Refuse what reading would hang on or exhaust: a FIFO, a device (`/dev/zero`), a file
    far larger than any configuration, a name the OS cannot take."""
    import stat

    try:
        found = path.stat()
    except FileNotFoundError:
        return  # the reader says so, with the usual advice
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            f"{label!r}: cannot read the file ({reason}); pass --config with a readable "
            "pipeline.toml"
        ) from None
    if stat.S_ISDIR(found.st_mode):
        return  # the reader says so
    if not stat.S_ISREG(found.st_mode):
        raise ConfigError(
            f"{label}: not a regular file (a device, pipe or socket); pass --config with a "
            "pipeline.toml file"
        )
    if found.st_size > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{label}: {found.st_size:,} bytes, more than any configuration "
            f"({MAX_CONFIG_BYTES // (1024 * 1024)} MB at most); pass --config with the right file"
        )


def settings_from_mapping(
    raw: Mapping[str, Any],
    environ: Mapping[str, str],
    sources: Mapping[str, SourceSpec],
    label: str = "(settings)",
) -> Settings:
    """Validate settings built in code (the demo, tests) by exactly the file's rules."""
    expanded = _expand_env(dict(raw), environ, label, ())
    return _validate(expanded, environ, label, None, sources)


def _validate(
    raw: dict[str, Any],
    environ: Mapping[str, str],
    label: str,
    path: Path | None,
    sources: Mapping[str, SourceSpec],
) -> Settings:
    _reject_unknown(raw, ("database", "execution", "sources"), label, ())
    database = raw.get("database", {})
    _expect_table(database, label, ("database",))
    _reject_unknown(database, ("url", "embedded_dir"), label, ("database",))
    env_url = environ.get("DATABASE_URL")
    db_url = env_url or database.get("url")
    if db_url is not None:
        # Name the one that is used: a bad DATABASE_URL is not fixed by editing the file.
        _check_database_url(
            db_url,
            label,
            "DATABASE_URL (environment, overrides database.url)" if env_url else "database.url",
        )
    embedded_dir = database.get("embedded_dir", DEFAULT_EMBEDDED_DIR)
    if not isinstance(embedded_dir, str):
        raise ConfigError(f"{label}: database.embedded_dir: expected a string path")
    if env_url:
        database_setting = "DATABASE_URL"
    elif db_url is not None:
        database_setting = f"[database] url in {label}"
    else:
        database_setting = f"the embedded Postgres in {embedded_dir}"

    execution_table = raw.get("execution", {})
    _expect_table(execution_table, label, ("execution",))
    if backend := environ.get("PIPELINE_BACKEND"):  # as DATABASE_URL: a deployment's choice
        if backend not in ("local", "queue"):
            raise ConfigError(
                f"{label}: PIPELINE_BACKEND (environment, overrides execution.backend): "
                f"{backend!r} is not a backend; set it to local or queue, or unset it"
            )
        execution_table = {**execution_table, "backend": backend}
    try:
        execution = ExecutionSettings.model_validate(execution_table)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, label, ("execution",), ExecutionSettings)) from None

    raw_sources = raw.get("sources", {})
    _expect_table(raw_sources, label, ("sources",))
    configured: dict[str, SourceConfig] = {}
    for name, body in raw_sources.items():
        _expect_table(body, label, ("sources", name))
        body = dict(body)
        type_name = body.pop("type", name)
        spec = _source_type(name, type_name, sources, label)
        try:
            settings = spec.settings_model.model_validate(body)
        except ValidationError as exc:
            raise ConfigError(
                _describe(exc, label, ("sources", name), spec.settings_model)
            ) from None
        streams: dict[str, StreamSettings] = {}
        for stream_name, stream_body in settings.streams.items():
            stream = spec.stream(stream_name)
            if stream is None:
                known = ", ".join(s.name for s in spec.streams)
                raise ConfigError(
                    f"{label}: sources.{name}.streams.{stream_name}: unknown stream; "
                    f"{name} has: {known}"
                )
            where = ("sources", name, "streams", stream_name)
            _expect_table(stream_body, label, where)
            try:
                stream_settings = stream.settings_model.model_validate(stream_body)
            except ValidationError as exc:
                raise ConfigError(_describe(exc, label, where, stream.settings_model)) from None
            if (
                stream_settings.page_size is not None
                and stream.max_page_size is not None
                and stream_settings.page_size > stream.max_page_size
            ):
                raise ConfigError(
                    f"{label}: {'.'.join(where)}.page_size: {stream_settings.page_size} is above "
                    f"the API's maximum of {stream.max_page_size}; use at most {stream.max_page_size}"
                )
            streams[stream_name] = stream_settings
        for stream in spec.streams:
            streams.setdefault(stream.name, stream.settings_model())
        configured[name] = SourceConfig(
            name=name, settings=settings, streams=streams, type=spec.name
        )
    _refuse_doubled_accounts(configured, sources, label)
    return Settings(
        path=path,
        database_url=db_url,
        embedded_dir=Path(embedded_dir),
        sources=configured,
        database_setting=database_setting,
        execution=execution,
    )


_INSTANCE = re.compile(r"[a-z][a-z0-9_]*")


def _refuse_doubled_accounts(
    configured: Mapping[str, SourceConfig], sources: Mapping[str, SourceSpec], label: str
) -> None:
    """Two instances of one type with the same API root and the same credentials are one
    account configured twice: every record would be loaded twice, under two `_source` values,
    and each run would read the API twice. Several instances on one server with credentials
    of their own (accounts of one host) are what instances are for, and pass."""
    seen: dict[tuple[Any, ...], str] = {}
    for name, config in configured.items():
        root = normalised_url(sources[config.type].api_root(config.settings))
        identity = (config.type, root, config.settings.account())
        first = seen.setdefault(identity, name)
        if first != name:
            raise ConfigError(
                f"{label}: sources.{name}: the same account as sources.{first} (the same API "
                f"root {root} and the same credentials), so every row would be stored twice, "
                f"under _source {first} and {name}; remove one of them, or give it its own "
                "credentials"
            )


def normalised_url(url: str) -> str:
    """`url` as the server reads it: scheme and host in lower case, no default port, no
    trailing slash, unreserved characters not percent-encoded."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port is not None and (scheme, port) not in (("http", 80), ("https", 443)):
        host = f"{host}:{port}"
    path = re.sub(
        r"%[0-9A-Fa-f]{2}",
        lambda m: (
            unquote(m.group())
            if re.fullmatch(r"[A-Za-z0-9._~-]", unquote(m.group()))
            else m.group().upper()
        ),
        parts.path,
    )
    return urlunsplit((scheme, host, path.rstrip("/"), "", ""))


def _source_type(
    name: str, type_name: Any, sources: Mapping[str, SourceSpec], label: str
) -> SourceSpec:
    """The source system of instance `name`: its `type`, or its own name without one. An
    instance name is a stream key's first part and every row's `_source`: a plain word."""
    known = ", ".join(sorted(sources)) or "none"
    if not _INSTANCE.fullmatch(name):
        raise ConfigError(
            f"{label}: sources.{name}: an instance name is lower-case letters, digits and "
            'underscores, starting with a letter (e.g. [sources.afosto_nl] with type = "afosto")'
        )
    if not isinstance(type_name, str) or type_name not in sources:
        if type_name == name:
            raise ConfigError(
                f"{label}: sources.{name}: unknown source; known sources: {known} "
                f'(for another account of one, add type = "<source>")'
            )
        raise ConfigError(
            f"{label}: sources.{name}.type: unknown source type {type_name!r}; known: {known}"
        )
    return sources[type_name]


def _check_database_url(url: Any, label: str, key: str) -> None:
    if not isinstance(url, str):
        raise ConfigError(
            f'{label}: {key}: expected a quoted string like "postgresql://user@host:5432/db"'
        )
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres", "postgresql+asyncpg"):
        raise ConfigError(
            f"{label}: {key}: expected postgresql://user@host:5432/db, "
            f"got a {parts.scheme or 'scheme-less'} URL"
        )
    try:
        parts.port  # noqa: B018  (reading it is the check: it parses)
    except ValueError:
        raise ConfigError(
            f"{label}: {key}: the port is not a number from 1 to 65535; "
            "expected postgresql://user@host:5432/db"
        ) from None


def _expect_table(value: Any, label: str, where: tuple[str, ...]) -> None:
    if not isinstance(value, dict):
        raise ConfigError(
            f"{label}: {'.'.join(where)}: expected a table like [{'.'.join(where)}], "
            f"got {type(value).__name__}"
        )


def _reject_unknown(
    table: Mapping[str, Any], allowed: tuple[str, ...], label: str, where: tuple[str, ...]
) -> None:
    for key in table:
        if key not in allowed:
            dotted = ".".join((*where, key))
            raise ConfigError(f"{label}: {dotted}: unknown key; allowed here: {', '.join(allowed)}")


def _expand_env(value: Any, environ: Mapping[str, str], label: str, where: tuple[str, ...]) -> Any:
    """Replace ${VAR} in every string; a missing variable is an error, never an empty string."""
    if isinstance(value, dict):
        return {k: _expand_env(v, environ, label, (*where, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, environ, label, (*where, str(i))) for i, v in enumerate(value)]
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if not environ.get(name):
                state = "is empty" if name in environ else "is not set"
                raise ConfigError(
                    f"{label}: {'.'.join(where)}: environment variable {name} {state}; "
                    f"export {name}=... before running, or write the value in the file"
                )
            return environ[name]

        return _ENV_REF.sub(substitute, value)
    return value


_FIXES = {
    "extra_forbidden": "unknown key; remove it or check its spelling",
    "missing": "required key is missing; add it",
    "int_type": "expected a whole number",
    "float_type": "expected a number",
    "bool_type": "expected true or false",
    "string_type": "expected a quoted string",
    "dict_type": "expected a table",
    "greater_than_equal": "too small",
    "less_than_equal": "too large",
    "greater_than": "too small",
    "less_than": "too large",
    "finite_number": "not a finite number",
}


def _describe(
    exc: ValidationError,
    label: str,
    where: tuple[str, ...],
    model: type[BaseModel] | None = None,
) -> str:
    """One line for the first problem: file, dotted key, what is wrong, how to fix it (for a
    number, the range `model` allows)."""
    error = exc.errors()[0]
    loc = tuple(str(part) for part in error["loc"])
    dotted = ".".join((*where, *loc)) if loc else ".".join(where)
    kind = error["type"]
    problem = _FIXES.get(kind, "")
    detail = error["msg"]
    if kind == "value_error":
        detail = str(error.get("ctx", {}).get("error", detail))
        return f"{label}: {dotted}: {detail}"
    if kind == "extra_forbidden":
        return f"{label}: {dotted}: {problem}"
    if kind == "missing":
        return f"{label}: {dotted}: {problem}"
    got = error.get("input")
    # A string may have come from ${VAR}, i.e. a secret: name its type, never echo it.
    if isinstance(got, str):
        got_text = ", got a string"
    elif isinstance(got, int) and not isinstance(got, bool) and abs(got) >= 10**20:
        got_text = f", got an integer of {len(str(abs(got)))} digits"
    elif got is not None and not isinstance(got, dict | list):
        got_text = f", got {got!r}"
    else:
        got_text = ""
    allowed = _allowed_range(model, loc) if model is not None else None
    allowed_text = f"; allowed: {allowed}" if allowed else ""
    return f"{label}: {dotted}: {problem or detail} ({detail.lower()}){got_text}{allowed_text}"


def _allowed_range(model: type[BaseModel], loc: tuple[str, ...]) -> str | None:
    """`low to high` for a bounded numeric field, as pipeline.example.toml states it."""
    if len(loc) != 1 or loc[0] not in model.model_fields:
        return None
    low = high = None
    # pydantic keeps Field(ge=..., le=...) as annotated-types constraints in the metadata.
    for bound in model.model_fields[loc[0]].metadata:
        if (ge := getattr(bound, "ge", None)) is not None:
            low = _number(ge)
        elif (gt := getattr(bound, "gt", None)) is not None:
            low = f"more than {_number(gt)}"
        elif (le := getattr(bound, "le", None)) is not None:
            high = _number(le)
        elif (lt := getattr(bound, "lt", None)) is not None:
            high = f"less than {_number(lt)}"
    if low is None and high is None:
        return None
    if high is None:
        return f"at least {low}"
    if low is None:
        return f"at most {high}"
    return f"{low} to {high}"


def _number(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:,g}"


__all__ = [
    "ConfigError",
    "Settings",
    "SourceConfig",
    "SourceSettings",
    "StreamSettings",
    "load_settings",
    "resolve_config_path",
    "settings_from_mapping",
]
