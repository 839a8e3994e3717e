"""The benchmark's simulators, in their own process (so they do not share the sync's core or
memory). Prints one JSON line with their URLs and credentials, then obeys one-line commands
on stdin, answering one JSON line each:

    change <source> <fraction>    update that fraction of the records (now), e.g. 0.01
    requests <source>             the start times (monotonic seconds) of its list requests
    truth_checksum <source>       count and checksum of what the source serves
    clear <source>                forget the request log
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import sys
from typing import Any

import orjson

from pipeline.sandbox import AfostoSimulator, SohoSimulator, ValomniaSimulator, start


def checksum(records: list[dict[str, Any]]) -> str:
    """Order-independent digest of records (sorted keys), to compare with the database."""
    total = 0
    for record in records:
        digest = hashlib.blake2b(orjson.dumps(record, option=orjson.OPT_SORT_KEYS), digest_size=8)
        total ^= int.from_bytes(digest.digest(), "big")
    return f"{total:016x}"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shipments", type=int, default=200_000)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--authorities", type=int, default=200_000)
    parser.add_argument("--customer-latency", type=float, default=0.05)
    args = parser.parse_args()

    sims: dict[str, Any] = {
        "afosto": AfostoSimulator(
            contacts=1,
            shipments=args.shipments,
            parcels=1,
            groups=1,
            prices_per_group=1,
            max_page_size=1000,
            seed=7,
        ),
        "soho": SohoSimulator(customers=args.customers, latency=args.customer_latency, seed=7),
        "valomnia": ValomniaSimulator(authorities=args.authorities, seed=7),
    }
    sims["afosto"].warm("shipments")
    running = {name: await start(sim) for name, sim in sims.items()}
    print(
        json.dumps(
            {
                "afosto": {"url": running["afosto"].url, "token": sims["afosto"].token},
                "soho": {"url": running["soho"].url, "token": sims["soho"].token},
                "valomnia": {
                    "url": running["valomnia"].url,
                    "username": sims["valomnia"].username,
                    "password": sims["valomnia"].password,
                },
            }
        ),
        flush=True,
    )
    loop = asyncio.get_running_loop()
    rng = random.Random(11)
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        command, name, *rest = line.split()
        sim = sims[name]
        if command == "change":
            fraction = float(rest[0])
            if name == "afosto":
                ids = sim.ids("shipments")
                chosen = rng.sample(ids, round(len(ids) * fraction))
                for shipment_id in chosen:
                    sim.update_shipment(
                        shipment_id, is_finished=True, stack_id=f"bench-{rng.random()}"
                    )
            elif name == "valomnia":
                ids = [a["id"] for a in sim.truth()]
                chosen = rng.sample(ids, round(len(ids) * fraction))
                for authority_id in chosen:
                    sim.update(authority_id, name=f"bench {authority_id} {rng.random()}")
            answer: Any = {"changed": len(chosen)}
        elif command == "requests":
            answer = {
                "at": [
                    r.at
                    for r in sim.requests
                    if r.path.endswith(("/customers", "/shipments", "/authorities"))
                ]
            }
        elif command == "truth_checksum":
            records = sim.truth("shipments") if name == "afosto" else sim.truth()
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
