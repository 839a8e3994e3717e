"""Extract for one list: its paginator and the `fetch` it walks with, and records prepared
the moment their body arrives.

The paginator is declared by the stream (`Stream.paginator`); `fetch` sends one request
through the source's client with the stream's filters, form and body parser: records that
stay raw (`pipeline.extract.rawjson`) for streams whose paging never looks inside them, parsed
otherwise.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from functools import partial
from typing import Any
from urllib.parse import quote

from pipeline.extract.http import HttpClient, JsonResponse
from pipeline.extract.paginators import Fetch, Paginator, records_at
from pipeline.extract.rawjson import loads_keeping_records, loads_parsing_records
from pipeline.load import PreparedBatch
from pipeline.streams import Stream
from pipeline.targets import StreamTarget


def records_stay_raw(stream: Stream, page_size: int) -> bool:
    """Whether a stream's records come as the bytes the API sent (`pipeline.extract.rawjson`): when
    they are the list's elements themselves and no paginator the stream is read with looks
    inside them. Decided per stream, not per run, because the content hash is over those bytes
    and must be over the same bytes whichever way (sync, reconcile, backfill) a record came."""
    if stream.record_path:
        return False
    factories = (stream.paginator, stream.reconcile_paginator)
    return not any(f(page_size).sees_records for f in factories if f is not None)


def segment(value: Any) -> str:
    """A value from an API response put into a URL path: quoted, so an id such as
    `../admin` or `a?b` stays one path segment of the declared endpoint."""
    return quote(str(value), safe="")


def list_fetch(
    client: HttpClient,
    target: StreamTarget,
    stream: Stream,
    path: str,
    parent: str | None = None,
    paginator_factory: Callable[[int], Paginator] | None = None,
) -> tuple[Paginator, Fetch]:
    """A fresh paginator for one list of `stream`, and the fetch it walks the list with."""
    size = stream.page_size(target.settings)
    paginator = (paginator_factory or stream.paginator)(size)
    filters = target.filter_params
    loads = loads_keeping_records if records_stay_raw(stream, size) else loads_parsing_records
    parse = partial(loads, records_path=paginator.records_path)
    form = None
    if stream.form is not None:
        form = {name: value.format(parent=parent) for name, value in stream.form.items()}

    async def fetch(params: Mapping[str, str], headers: Mapping[str, str]) -> JsonResponse:
        return await client.request(
            stream.method,
            path,
            params={**filters, **params},
            headers=headers,
            form=form,
            multipart=stream.multipart,
            expect=paginator.check,
            parse=parse,
        )

    return paginator, fetch


class PreparedRecords(list[Any]):
    """A page's record list that carries its prepared batch: prepared the moment the body was
    parsed, while the records were still in the CPU's caches (hashing a record parsed a moment
    ago took 0.7 us, one parsed 40 pages earlier 1.6-2.3 us; `bench/`, 1 KB shipments)."""

    prepared: PreparedBatch


def preparing_on_arrival(
    fetch: Fetch, records_path: Sequence[str], prepare: Callable[[Sequence[Any]], PreparedBatch]
) -> Fetch:
    """`fetch`, with the body's records prepared as they arrive (see `prepared`)."""

    async def fetched(params: Mapping[str, str], headers: Mapping[str, str]) -> JsonResponse:
        response = await fetch(params, headers)
        try:
            records = records_at(response.body, records_path)
        except ValueError:
            return response  # not a list of records: the paginator says what is wrong
        carried = PreparedRecords(records)
        carried.prepared = prepare(records)
        if not records_path:
            return replace(response, body=carried)
        holder = response.body
        for step in records_path[:-1]:
            holder = holder[step]
        holder[records_path[-1]] = carried
        return response

    return fetched


def prepared(
    records: Sequence[Any], prepare: Callable[[Sequence[Any]], PreparedBatch]
) -> PreparedBatch:
    """A page's prepared batch: the one its records carry, else prepared now."""
    carried = getattr(records, "prepared", None)
    return carried if carried is not None else prepare(records)


Fetcher = Callable[[Mapping[str, str], Mapping[str, str]], Awaitable[JsonResponse]]
