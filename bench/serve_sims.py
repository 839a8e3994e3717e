"""The benchmark's simulators, in their own process (so they do not share the sync's core or
memory). Serves every source of the registry (`pipeline.sandbox.SANDBOXES`) at the sizes given
(`--<size>`, as `pipeline sandbox` takes them), and with `--instances soho=16` sixteen more
accounts of that source (`soho_01` .. `soho_16`: seeds 1..16, the same sizes and latency, each
on its own port). Prints one JSON line with each one's [sources.<name>] table (URL and
credentials; an account's also has its `type`), then obeys one-line commands on stdin, answering
one JSON line each (`<source>` is a source or an account):

    change <source>.<stream> <fraction>   update that fraction of the records (now), e.g. 0.01
    requests <source>.<stream>            the start times (monotonic seconds) of its list requests
    truth_checksum <source>.<stream>      count and checksum of what the source serves
    clear <source>                        forget the request log
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.sandbox import SANDBOXES, start
from pipeline.sources import SOURCES


def checksum(records: list[dict[str, Any]]) -> str:
    """Order-independent digest of records (sorted keys), to compare with the database."""
    total = 0
    for record in records:
        digest = hashlib.blake2b(orjson.dumps(record, option=orjson.OPT_SORT_KEYS), digest_size=8)
        total ^= int.from_bytes(digest.digest(), "big")
    return f"{total:016x}"


@dataclass(frozen=True)
class Measured:
    """A stream the benchmark changes and checks: its record ids (cheaply), one record's
    change (a new cursor and new content), what its list serves, and an optional warm-up so the
    server's cost per page is the same from the first scan."""

    ids: Callable[[Any], list[Any]]
    touch: Callable[[Any, Any, random.Random], object]
    truth: Callable[[Any], list[dict[str, Any]]]
    warm: Callable[[Any], object] = lambda sim: None


# The streams bench/run.py measures incremental runs and correctness on (scenario data, as a
# test's table of targets is): every other source is served, but only read.
MEASURED: dict[str, Measured] = {
    "afosto.shipments": Measured(
        ids=lambda sim: sim.ids("shipments"),
        touch=lambda sim, id_, rng: sim.update_shipment(
            id_, is_finished=True, stack_id=f"bench-{rng.random()}"
        ),
        truth=lambda sim: sim.truth("shipments"),
        warm=lambda sim: sim.warm("shipments"),
    ),
    "valomnia.authorities": Measured(
        ids=lambda sim: [a["id"] for a in sim.truth()],
        touch=lambda sim, id_, rng: sim.update(id_, name=f"bench {id_} {rng.random()}"),
        truth=lambda sim: sim.truth(),
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seed", type=int, default=7)
    for sandbox in SANDBOXES.values():
        for size in sandbox.sizes:
            parser.add_argument(size.flag, type=int, default=size.default, help=size.help)
    parser.add_argument(
        "--latency",
        action="append",
        default=[],
        metavar="SOURCE=SECONDS",
        help="answer that source's (and its accounts') requests this much later (repeatable)",
    )
    parser.add_argument(
        "--instances",
        action="append",
        default=[],
        metavar="SOURCE=N",
        help="also serve N accounts of that source, <source>_01..: seeds 1..N (repeatable)",
    )
    return parser


def _per_source(flag: str, pairs: list[str]) -> dict[str, str]:
    values = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if name not in SANDBOXES:
            raise SystemExit(f"{flag} {pair}: no source {name!r}; sources: {', '.join(SANDBOXES)}")
        values[name] = value
    return values


def accounts(instances: dict[str, str]) -> dict[str, str]:
    """Each account's name and its source: `soho_01`..`soho_NN` for `soho=NN`."""
    return {
        f"{source}_{i:02d}": source
        for source, count in instances.items()
        for i in range(1, int(count) + 1)
    }


def truth(source: str, stream: str, sim: Any) -> list[dict[str, Any]]:
    """What the simulator serves for the stream: the measured one's, or its sandbox's."""
    measured = MEASURED.get(f"{source}.{stream}")
    if measured is not None:
        return measured.truth(sim)
    return SANDBOXES[source].streams[stream].records(sim)


async def main() -> None:
    args = build_parser().parse_args()
    sizes = {s.name: getattr(args, s.name) for sb in SANDBOXES.values() for s in sb.sizes}
    sims: dict[str, Any] = {name: sb.build(args.seed, sizes) for name, sb in SANDBOXES.items()}
    source_of = {name: name for name in SANDBOXES}
    for account, source in accounts(_per_source("--instances", args.instances)).items():
        source_of[account] = source
        sims[account] = SANDBOXES[source].build(int(account.rsplit("_", 1)[1]), sizes)
    latencies = _per_source("--latency", args.latency)
    for name, sim in sims.items():
        if source_of[name] in latencies:
            sim.latency = float(latencies[source_of[name]])
    for key, measured in MEASURED.items():
        measured.warm(sims[key.split(".")[0]])
    running = {name: await start(sim) for name, sim in sims.items()}
    tables = {}
    for name, r in running.items():
        source = source_of[name]
        tables[name] = SANDBOXES[source].settings(r) | ({} if source == name else {"type": source})
    print(json.dumps(tables), flush=True)
    loop = asyncio.get_running_loop()
    rng = random.Random(11)
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        command, key, *rest = line.split()
        name, _, stream = key.partition(".")
        sim, source = sims[name], source_of[name]
        answer: Any
        if command == "change":
            measured = MEASURED[f"{source}.{stream}"]
            ids = measured.ids(sim)
            chosen = rng.sample(ids, round(len(ids) * float(rest[0])))
            for record_id in chosen:
                measured.touch(sim, record_id, rng)
            answer = {"changed": len(chosen)}
        elif command == "requests":
            spec = SOURCES[source].stream(stream)
            assert spec is not None, f"no stream {key}"
            answer = {"at": [r.at for r in sim.requests if r.path.endswith(spec.path)]}
        elif command == "truth_checksum":
            records = truth(source, stream, sim)
            answer = {"count": len(records), "checksum": checksum(records)}
        elif command == "clear":
            sim.clear_requests()
            answer = {"ok": True}
        else:
            answer = {"error": f"unknown command {command}"}
        print(json.dumps(answer), flush=True)
    for r in running.values():
        await r.stop()


if __name__ == "__main__":
    asyncio.run(main())
