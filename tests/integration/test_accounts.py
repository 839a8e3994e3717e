"""Several accounts of one API on ONE server (`pipeline.sandbox.Accounts`), each configured as
an instance: only the credentials tell the accounts apart, so only they keep one instance's
rows from landing under another's `_source`.

Run against every registered source, from its sandbox declaration: both accounts are the
source's small simulator of one seed (the same ids), then the second changes as the demo
changes a source and loses one record of each stream, so that the same keys hold different
content. A server answering every request from one account would store one account's records
under both instances; these tests fail then.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import random
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from pydantic import SecretStr
from rich.console import Console
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.cli import build_parser, main
from pipeline.config import Settings, settings_from_mapping
from pipeline.demo import default_sizes, serve_sandbox, toml_tables
from pipeline.sandbox import SANDBOXES, Accounts, RunningAccounts, Simulator, serve_accounts
from pipeline.sources import SOURCES
from pipeline.streams import Stream
from tests import source_limits
from tests.helpers import instance_settings, rows, sync
from tests.source_limits import expect_config

SEED = 43

sources = pytest.mark.parametrize("source", list(SOURCES))


def _differ(source: str, sim: Simulator) -> None:
    """Give `sim` other content under the same keys than a fresh simulator of its seed."""
    sandbox = SANDBOXES[source]
    sandbox.change_for_demo(sim, random.Random(5))
    for declared in sandbox.streams.values():
        removal = declared.removal.mutate
        if removal is not None:
            first = declared.records(sim)[0]
            sim.mutate({key: value.format(**first) for key, value in removal.items()})


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def server(source: str) -> AsyncIterator[RunningAccounts]:
    sandbox = SANDBOXES[source]
    a, b = (sandbox.small(SEED).as_account(f"{source}_{x}") for x in "ab")
    _differ(source, b)
    async with serve_accounts(Accounts([a, b])) as running:
        yield running


def _canonical(records: list[dict[str, Any]]) -> list[bytes]:
    return sorted(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in records)


def _held(source: str, stream: Stream, sim: Simulator) -> list[bytes]:
    """What the account holds for the stream, as the stream stores it (a partitioned stream's
    records carry their parent's key, as its rows do)."""
    return _canonical(SANDBOXES[source].streams[stream.name].records(sim))


async def _stored(engine: AsyncEngine, source: str, stream: Stream, instance: str) -> list[bytes]:
    """The live rows of `instance` for the stream: each row's record, with the column the run
    filled from its partition."""
    parts = stream.partitions
    column = f", {parts.column} AS part" if parts is not None else ""
    found = await rows(
        engine,
        f"SELECT data{column} FROM {SOURCES[source].schema}.{stream.name} "
        "WHERE _source = :instance AND _deleted_at IS NULL",
        instance=instance,
    )
    if parts is None:
        return _canonical([r.data for r in found])
    return _canonical([{**r.data, parts.column: r.part} for r in found])


@sources
async def test_each_instance_stores_exactly_its_own_accounts_records(
    engine: AsyncEngine, source: str, server: RunningAccounts
) -> None:
    a, b = (server.accounts[f"{source}_{x}"] for x in "ab")
    settings = instance_settings(server)

    outcomes = await sync(engine, settings)

    assert outcomes and all(o.status == "succeeded" for o in outcomes.values()), {
        k: o.error for k, o in outcomes.items() if o.status != "succeeded"
    }
    differing = 0
    for stream in SOURCES[source].streams:
        held_a, held_b = _held(source, stream, a), _held(source, stream, b)
        stored_a = await _stored(engine, source, stream, a.account)
        stored_b = await _stored(engine, source, stream, b.account)
        assert stored_a == held_a, f"{a.account}.{stream.name}"
        assert stored_b == held_b, f"{b.account}.{stream.name}"
        only_b = set(held_b) - set(held_a)
        assert not only_b & set(stored_a), f"{b.account}'s records under {a.account}"
        differing += len(only_b) + len(set(held_a) - set(held_b))
    assert differing > 0, "the accounts hold the same records: this test would prove nothing"
    assert server.accounts.unclaimed == 0
    assert a.requests and b.requests


def _with_wrong_secrets(settings: Settings, instance: str, source: str) -> dict[str, Any]:
    """The instance's credentials with each secret replaced by an account's of another server:
    its identity (user name, client id) where it has one stays."""
    stranger = SANDBOXES[source].small(SEED).as_account("stranger")
    issued = SANDBOXES[source].credentials(stranger)
    held = settings.sources[instance].settings
    return {k: v for k, v in issued.items() if isinstance(getattr(held, k, None), SecretStr)}


@sources
async def test_an_instance_with_wrong_credentials_fails_alone(
    engine: AsyncEngine, source: str, server: RunningAccounts
) -> None:
    a, b = (server.accounts[f"{source}_{x}"] for x in "ab")
    wrong = _with_wrong_secrets(instance_settings(server), b.account, source)
    assert wrong, "no secret to get wrong"
    settings = instance_settings(server, extra={b.account: wrong})

    outcomes = await sync(engine, settings)

    for stream in SOURCES[source].streams:
        good, bad = outcomes[f"{a.account}.{stream.name}"], outcomes[f"{b.account}.{stream.name}"]
        assert good.status == "succeeded", good.error
        assert bad.status == "failed"
        assert b.account in (bad.error or "") and "401" in (bad.error or ""), bad.error
        assert await _stored(engine, source, stream, a.account) == _held(source, stream, a)
        assert await _stored(engine, source, stream, b.account) == []


@pytest.mark.parametrize("source", ["sparkfly"])
async def test_tokens_from_one_exchange_endpoint_reach_the_account_that_issued_them(
    engine: AsyncEngine, source: str, server: RunningAccounts
) -> None:
    a: Any = server.accounts["sparkfly_a"]
    b: Any = server.accounts["sparkfly_b"]
    exchange = {
        sim.account: {"token": None, "identity": sim.identity, "key": sim.key} for sim in (a, b)
    }
    settings = instance_settings(server, extra=exchange)

    outcomes = await sync(engine, settings, "credentials")

    assert all(o.status == "succeeded" for o in outcomes.values())
    assert (a.auth_count, b.auth_count) == (1, 1)
    (stream,) = SOURCES[source].streams
    for sim in (a, b):
        assert await _stored(engine, source, stream, sim.account) == _held(source, stream, sim)


async def test_the_sandbox_command_prints_a_table_per_account(http: aiohttp.ClientSession) -> None:
    """`pipeline sandbox --accounts 2`: the tables it prints validate as a pipeline.toml, and
    each instance's credentials reach its own account of the one server."""
    assert build_parser().parse_args(["sandbox", "--accounts", "2"]).accounts == 2
    with pytest.raises(SystemExit):
        build_parser().parse_args(["sandbox", "--accounts", "0"])
    out = io.StringIO()
    sizes = {**default_sizes(), "customers": 10, "shipments": 5, "contacts": 5}
    task = asyncio.create_task(
        serve_sandbox(
            sizes=sizes,
            host="127.0.0.1",
            ports=dict.fromkeys(SANDBOXES, 0),
            console=Console(file=out, width=300),
            accounts=2,
        )
    )
    try:
        for _ in range(200):
            if "Serving until Ctrl-C." in out.getvalue():
                break
            await asyncio.sleep(0.05)
        text = out.getvalue()
        raw = tomllib.loads(text[text.index("[sources.") : text.index("Serving until Ctrl-C.")])
        tables = raw["sources"]
        customers = {}
        for instance in ("soho_a", "soho_b"):
            table = tables[instance]
            headers = {"Authorization": f"Bearer {table['token']}"}
            async with http.get(f"{table['base_url']}/customers", headers=headers) as response:
                assert response.status == 200
                customers[instance] = (await response.json())["records"]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert set(tables) == {f"{source}_{x}" for source in SANDBOXES for x in "ab"}
    assert "(2 accounts: soho_a, soho_b)" in text
    settings = settings_from_mapping(raw, {}, SOURCES)
    assert {c.type for c in settings.sources.values()} == set(SANDBOXES)
    assert tables["soho_a"]["base_url"] == tables["soho_b"]["base_url"]
    assert len(customers["soho_a"]) == len(customers["soho_b"]) == 10
    assert customers["soho_a"] != customers["soho_b"]  # each account its own seed


@pytest.mark.parametrize("source", ["valomnia"])
async def test_the_pipeline_command_tells_the_instances_of_one_server_apart(
    engine: AsyncEngine,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    source: str,
    server: RunningAccounts,
) -> None:
    """A pipeline.toml with two instances at one URL, run by the `pipeline` command; the limits
    each account is held to are found by the credentials its instance holds."""
    tables = {
        instance: {"type": source, **SANDBOXES[source].settings(account), "backoff_seconds": 0.01}
        for instance, account in server.each().items()
    }
    config = tmp_path / "pipeline.toml"
    config.write_text(toml_tables(tables), encoding="utf-8")
    env = {"DATABASE_URL": database_url, "PIPELINE_CONFIG": str(config)}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    expect_config(config, env, *server.each().values())
    watch = source_limits.current()
    assert watch is not None and all(watch.holds(sim) for sim in server.accounts)

    assert await asyncio.to_thread(main, ["sync"]) == 0

    (stream,) = SOURCES[source].streams
    for sim in server.accounts:
        assert sim.login_count == 1  # type: ignore[attr-defined]
        assert await _stored(engine, source, stream, sim.account) == _held(source, stream, sim)
