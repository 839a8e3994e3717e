"""Seeded record generators for the Afosto simulator (SOURCES.md §1.6; seed 003 schemas).

Why lazy: benchmarks page through 200,000 shipments and 300,000 parcels, and as Python dicts
those would take gigabytes. So contacts, shipments and parcels are not stored. Each one is a
pure function of `(seed, table, sequence number)`: its id *encodes* that number (`IdCodec`),
and its fields are drawn from an RNG reseeded from it. The simulator keeps only the list of
live sequence numbers and the records a mutation has touched. Price groups and prices are few
and are stored as plain dicts.

Values follow the schema definitions (003:87311 onward), never the placeholder "Response
Example" blocks: integers are integers, flags are booleans, ids are uuid-shaped strings.
Timestamps are RFC 3339: `+00:00` without fractions on /lcs, `Z` with milliseconds on /rel
and /cat [inferred: the precision is undocumented; the mix makes clients parse both].
"""

from __future__ import annotations

import bisect
import random
from array import array
from collections.abc import Sequence
from typing import Any

from . import fakedata
from .core import format_seconds
from .fakedata import between, pick

# fmt: off
CONTACT_KEYS = (
    "id", "version", "email", "is_guest", "audience", "tags", "given_name", "additional_name",
    "family_name", "organisations", "billing", "shipping", "phone_numbers", "metadata",
)
CONTACT_TIME_KEYS = ("created_at", "updated_at", "deleted_at")
SHIPMENT_LIST_KEYS = (
    "id", "number", "type", "method_id", "contact_id", "channel_id", "addressing", "ship_at",
    "estimated_ship_at", "expected_at", "stack_id", "is_editable", "is_outbound", "is_listed",
    "is_finished", "is_in_transit", "is_complete", "is_overcomplete", "is_canceled", "secret",
    "prior_shipments", "list_id", "created_at", "updated_at",
)
SHIPMENT_DETAIL_KEYS = (
    "id", "number", "type", "method_id", "contact_id", "channel_id", "order_id", "addressing",
    "ship_at", "estimated_ship_at", "expected_at", "stack_id", "is_editable", "is_outbound",
    "is_labeled", "is_serviced", "is_complete", "is_overcomplete", "is_boxed", "is_handled",
    "is_listed", "is_finished", "is_in_transit", "is_canceled", "items", "backorders", "overage",
    "parcels", "secret", "prior_shipments", "list_id", "created_at", "updated_at",
)
PARCEL_KEYS = (
    "id", "number", "weight", "length", "width", "height", "tracking_code", "tracking_url",
    "position", "label", "shipment_id", "count", "items", "is_in_transit", "is_delivered",
    "is_outbound", "is_finished", "file_id", "ship_at", "in_transit_at", "finished_at",
    "created_at", "updated_at",
)
GROUP_KEYS = (
    "id", "name", "is_including_vat", "currency", "metadata", "deleted_at", "created_at",
    "updated_at",
)
PRICE_KEYS = (
    "id", "sku", "amount", "original_amount", "vat", "price_group_id", "active_at", "created_at",
)
# fmt: on
SHIPMENT_TYPES = ("delivery", "collect", "internal")

# --------------------------------------------------------------------------- ids and time

M64 = (1 << 64) - 1
M48 = (1 << 48) - 1
_MUL_A = 0x5DEECE66D  # odd multipliers: invertible modulo 2**48
_MUL_B = 0x9E3779B97F4B
_INV_A = pow(_MUL_A, -1, 1 << 48)
_INV_B = pow(_MUL_B, -1, 1 << 48)
_HEX_CHARS = frozenset("0123456789abcdef")


def mix64(value: int) -> int:
    """SplitMix64's finaliser: a cheap, well-spread hash of an integer."""
    value = (value + 0x9E3779B97F4A7C15) & M64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & M64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & M64
    return value ^ (value >> 31)


def _permute48(value: int) -> int:
    value = (value * _MUL_A) & M48
    value ^= value >> 24
    return (value * _MUL_B) & M48


def _unpermute48(value: int) -> int:
    value = (value * _INV_B) & M48
    value ^= value >> 24
    return (value * _INV_A) & M48


class IdCodec:
    """uuid-v4-shaped ids that encode a sequence number, so no id has to be stored.

    The last group is a bijective scramble of the sequence number; the rest is a hash of it.
    `decode` returns None for anything `encode` did not produce (other salt, case, shape).
    """

    def __init__(self, salt: int) -> None:
        self._salt48 = mix64(salt) & M48
        self._salt64 = mix64(salt ^ 0x5EED5EED5EED)

    def encode(self, seq: int) -> str:
        tail = _permute48(seq ^ self._salt48)
        head = mix64(tail ^ self._salt64)
        low = mix64(head)
        return (
            f"{head >> 32:08x}-{(head >> 16) & 0xFFFF:04x}-{0x4000 | (head & 0x0FFF):04x}-"
            f"{0x8000 | (low & 0x3FFF):04x}-{tail:012x}"
        )

    def decode(self, text: str) -> int | None:
        if len(text) != 36 or not _HEX_CHARS.issuperset(text[24:]):
            return None
        seq = _unpermute48(int(text[24:], 16)) ^ self._salt48
        return seq if self.encode(seq) == text else None


def lcs_time(seconds: int) -> str:
    """`2023-04-05T06:07:08+00:00`: /lcs timestamps [inferred form]."""
    return format_seconds(seconds) + "+00:00"


def ms_time(ms: int) -> str:
    """`2023-04-05T06:07:08.123Z`: /rel and /cat timestamps [inferred form]."""
    seconds, milli = divmod(ms, 1000)
    return f"{format_seconds(seconds)}.{milli:03d}Z"


HOUR = 3600
DAY = 86_400

# --------------------------------------------------------------------------- places


class Country:
    """What addresses and phone numbers of one country look like."""

    def __init__(
        self,
        code: str,
        dial: str,
        areas: tuple[str, ...],
        centre: tuple[float, float],
        mobile: tuple[str, int],
        fixed: tuple[str, int],
    ) -> None:
        self.code = code
        self.dial = dial
        self.areas = areas
        self.centre = centre
        self.mobile = mobile  # (national prefix without the trunk 0, digits after it)
        self.fixed = fixed

    def postal_code(self, rng: random.Random) -> str:
        if self.code == "NL":
            letters = chr(65 + int(rng.random() * 26)) + chr(65 + int(rng.random() * 26))
            return f"{between(rng, 1000, 9999)} {letters}"
        if self.code == "DE":
            return f"{between(rng, 1067, 99998):05d}"  # keeps leading zeros: text, not number
        return str(between(rng, 1000, 9999))


# fmt: off
COUNTRIES: tuple[Country, ...] = (
    Country("NL", "31", ("Noord-Holland", "Zuid-Holland", "Utrecht", "Noord-Brabant",
                         "Gelderland", "Groningen", "Limburg", "Overijssel"),
            (52.1, 5.3), ("6", 8), ("20", 7)),
    Country("BE", "32", ("Antwerpen", "Oost-Vlaanderen", "West-Vlaanderen", "Brussel",
                         "Vlaams-Brabant", "Luik", "Henegouwen"),
            (50.8, 4.4), ("47", 7), ("2", 7)),
    Country("DE", "49", ("Berlin", "Bayern", "Nordrhein-Westfalen", "Hamburg", "Hessen",
                         "Niedersachsen", "Sachsen"),
            (51.2, 10.4), ("15", 9), ("30", 8)),
)
# fmt: on
_INFIXES = ("van", "de", "van der", "van den", "ter", "J.", "M.", "A.")


def _country(rng: random.Random) -> Country:
    roll = rng.random()
    return COUNTRIES[0] if roll < 0.6 else COUNTRIES[1] if roll < 0.85 else COUNTRIES[2]


def _coordinate(rng: random.Random, centre: float) -> float:
    return round(centre + (rng.random() - 0.5) * 2.0, 6)


def address(
    rng: random.Random,
    country: Country,
    created_ms: int,
    names: tuple[str, str, str],
    organisation: str,
) -> dict[str, Any]:
    """A RelAddress (003:101168): `premise_number` is an integer; `created_at`, no update."""
    street = fakedata.thoroughfare(rng)
    number = between(rng, 1, 250)
    suffix = pick(rng, ("", "", "", "", "A", "B", "bis"))
    locality = fakedata.city(rng)
    area = pick(rng, country.areas)
    postal = country.postal_code(rng)
    lat, long = _coordinate(rng, country.centre[0]), _coordinate(rng, country.centre[1])
    return {
        "id": fakedata.uuid4(rng),
        "country_code": country.code,
        "administrative_area": area,
        "locality": locality,
        "dependent_locality": "",
        "postal_code": postal,
        "sorting_code": "",
        "address_line_1": f"{street} {number}{suffix}",
        "address_line_2": "" if rng.random() < 0.8 else fakedata.building_addon(rng),
        "thoroughfare": street,
        "premise_number": number,
        "premise_number_suffix": suffix,
        "organisation": organisation,
        "given_name": names[0],
        "additional_name": names[1],
        "family_name": names[2],
        "geo_location": {
            "lat": lat,
            "long": long,
            "box": {
                "north_east": {"lat": round(lat + 0.0005, 6), "long": round(long + 0.0005, 6)},
                "south_west": {"lat": round(lat - 0.0005, 6), "long": round(long - 0.0005, 6)},
            },
            "is_precise": rng.random() < 0.9,
            "address": {
                "premise_number": number,
                "premise_number_suffix": suffix,
                "thoroughfare": street,
                "postal_code": postal,
                "locality": locality,
                "administrative_area": area,
                "country_code": country.code,
            },
        },
        "created_at": ms_time(created_ms),
    }


def phone_number(rng: random.Random, country: Country, created_ms: int) -> dict[str, Any]:
    """A RelPhoneNumber (003:100981): E.164 `number` plus the national rendering."""
    roll = rng.random()
    kind = "mobile" if roll < 0.6 else "fixed_number" if roll < 0.95 else "voip"
    prefix, digits = country.mobile if kind == "mobile" else country.fixed
    subscriber = f"{rng.getrandbits(40) % 10**digits:0{digits}d}"
    return {
        "id": fakedata.uuid4(rng),
        "country_code": country.code,
        "number": f"+{country.dial}{prefix}{subscriber}",
        "national": f"0{prefix} {subscriber}",
        "type": kind,
        "created_at": ms_time(created_ms),
    }


def _iban(rng: random.Random, country: Country) -> str:
    check = between(rng, 10, 98)
    if country.code == "NL":
        bank = pick(rng, ("ABNA", "RABO", "INGB", "TRIO", "BUNQ"))
        return f"NL{check}{bank}{rng.getrandbits(36) % 10**10:010d}"
    if country.code == "BE":
        return f"BE{check}{rng.getrandbits(40) % 10**12:012d}"
    return f"DE{check}{rng.getrandbits(60) % 10**18:018d}"


def _vat_number(rng: random.Random, country: Country) -> str:
    digits = f"{rng.getrandbits(32) % 10**9:09d}"
    if country.code == "NL":
        return f"NL{digits}B01"
    if country.code == "BE":
        return f"BE0{digits}"
    return f"DE{digits}"


def organisation(
    rng: random.Random, country: Country, created_ms: int, contact_names: tuple[str, str, str]
) -> dict[str, Any]:
    """An embedded organisation with the fields the contact list example renders (003:4893)."""
    name = fakedata.company(rng)
    domain = fakedata.domain(name, between(rng, 1, 99)).replace("-", "")
    verified_ms = created_ms + between(rng, 1_000, 86_400_000)
    return {
        "id": fakedata.uuid4(rng),
        "version": fakedata.hex_token(rng, 16),
        "name": name,
        "file_id": fakedata.uuid4(rng),
        "coc_number": f"{rng.getrandbits(30) % 10**8:08d}",
        "account_manager": f"{fakedata.first_name(rng)} {fakedata.last_name(rng)}",
        "administration": {"email": f"invoices@{domain}.{country.code.lower()}"},
        "tags": [] if rng.random() < 0.6 else [pick(rng, ("wholesale", "reseller", "key-account"))],
        "metadata": {},
        "registrations": [
            {
                "country_code": country.code,
                "number": _vat_number(rng, country),
                "verification": {
                    "is_pending": False,
                    "is_valid": rng.random() < 0.95,
                    "country_code": country.code,
                    "name": name.upper(),
                    "type": "vies",
                    "metadata": {},
                    "verified_at": ms_time(verified_ms),
                },
            }
        ],
        "payment_settings": {
            "post_payment": {
                "spending_limit": between(rng, 1, 50) * 100_000,
                "current_due_amount": between(rng, 0, 2_500_000) if rng.random() < 0.5 else 0,
                "due_after": (14, 30, 30, 60)[int(rng.random() * 4)],
                "iban": [_iban(rng, country)],
            },
            "invoice": {
                "is_expected_through_post_mail": rng.random() < 0.1,
                "is_expected_through_email": True,
                "is_expected_at_delivery": rng.random() < 0.05,
            },
        },
        "phone_numbers": {"primary": phone_number(rng, country, created_ms), "secondary": []},
        "billing": {
            "primary": address(rng, country, created_ms, contact_names, name),
            "secondary": [],
        },
    }


class RelGenerator:
    """Contacts of one seed: `contact(seq)` is the same record every time it is asked for."""

    def __init__(
        self, seed: int, codec: IdCodec, start_ms: int, span_ms: int, count: int, with_times: bool
    ) -> None:
        self.codec = codec
        self.with_times = with_times
        self._salt = mix64(seed * 1_000_003 + 11)
        self._start_ms = start_ms
        self._end_ms = start_ms + span_ms
        self._slot_ms = span_ms / max(count, 1)
        self._rng = random.Random()

    def seeded_created_ms(self, seq: int) -> int:
        jitter = (mix64(self._salt ^ seq) % 1_000_000) / 2_000_000
        return self._start_ms + int((seq + jitter) * self._slot_ms)

    def contact(self, seq: int) -> dict[str, Any]:
        created = self.seeded_created_ms(seq)
        rng = self._rng
        rng.seed(mix64(self._salt + seq))
        updated = created
        if rng.random() < 0.3:
            updated = created + int(rng.random() * (self._end_ms - created))
        return self._build(rng, seq, created, updated)

    def new_contact(self, seq: int, created_ms: int) -> dict[str, Any]:
        rng = self._rng
        rng.seed(mix64(self._salt + seq))
        rng.random()
        return self._build(rng, seq, created_ms, created_ms)

    def _build(self, rng: random.Random, seq: int, created: int, updated: int) -> dict[str, Any]:
        country = _country(rng)
        given, family = fakedata.first_name(rng), fakedata.last_name(rng)
        additional = pick(rng, _INFIXES) if rng.random() < 0.35 else ""
        names = (given, additional, family)
        org = organisation(rng, country, created, names)
        billing = address(rng, country, created, names, org["name"] if rng.random() < 0.3 else "")
        if rng.random() < 0.7:  # ships to the billing place: same fields, own address id
            shipping = dict(billing, id=fakedata.uuid4(rng))
        else:
            shipping = address(rng, country, created, names, "")
        shipping_secondary = (
            [address(rng, country, created, names, "")] if rng.random() < 0.1 else []
        )
        phone_secondary = [phone_number(rng, country, created)] if rng.random() < 0.15 else []
        tag_roll = rng.random()
        tags = (
            []
            if tag_roll < 0.5
            else ["newsletter"]
            if tag_roll < 0.8
            else ["newsletter", pick(rng, ("vip", "b2b", "returning"))]
        )
        record: dict[str, Any] = {
            "id": self.codec.encode(seq),
            "version": fakedata.hex_token(rng, 16),
            "email": fakedata.email(rng, given, family),
            "is_guest": rng.random() < 0.2,
            "audience": "default" if rng.random() < 0.9 else "business",
            "tags": tags,
            "given_name": given,
            "additional_name": additional,
            "family_name": family,
            "organisations": {"primary": org, "secondary": []},
            "billing": {"primary": billing, "secondary": []},
            "shipping": {"primary": shipping, "secondary": shipping_secondary},
            "phone_numbers": {
                "primary": phone_number(rng, country, created),
                "secondary": phone_secondary,
            },
            "metadata": {} if rng.random() < 0.7 else {"customer_number": f"C{seq + 10001:07d}"},
        }
        if self.with_times:
            record["created_at"] = ms_time(created)
            record["updated_at"] = ms_time(updated)
            record["deleted_at"] = None
        return record


# --------------------------------------------------------------------------- catalogue


class Product:
    __slots__ = ("amount", "description", "hs_code", "reduced_vat", "sku")

    def __init__(
        self, sku: str, description: str, hs_code: str, amount: int, reduced_vat: bool
    ) -> None:
        self.sku = sku
        self.description = description
        self.hs_code = hs_code
        self.amount = amount
        self.reduced_vat = reduced_vat


def make_catalogue(rng: random.Random, size: int = 400) -> tuple[Product, ...]:
    products = []
    for number in range(size):
        sku, description, hs_code = fakedata.product(rng, number + 1)
        amount = between(rng, 2, 150) * 100 - (1, 5, 51)[int(rng.random() * 3)]  # 19.99, 19.95
        products.append(
            Product(sku, description, hs_code, amount, hs_code.startswith(("09", "18", "48")))
        )
    return tuple(products)


# --------------------------------------------------------------------------- shipments


class LcsGenerator:
    """Shipments and parcels of one seed, generated on demand from their sequence numbers.

    Seeded parcels belong to seeded shipments through `parcel_shipment` (one sorted array, so
    a shipment's seeded parcels are one bisect away). A parcel is created shortly after its
    shipment and before the next one, so both tables are in creation order by sequence number.
    """

    def __init__(
        self,
        seed: int,
        *,
        shipment_codec: IdCodec,
        parcel_codec: IdCodec,
        contact_codec: IdCodec,
        contacts: int,
        shipments: int,
        parcels: int,
        start: int,
        span: int,
        catalogue: Sequence[Product],
    ) -> None:
        self.shipment_codec = shipment_codec
        self.parcel_codec = parcel_codec
        self.contact_codec = contact_codec
        self.contacts = contacts
        self.shipments = shipments
        self.parcels = parcels
        self.catalogue = catalogue
        self.start = start
        self.end = start + span
        self._slot = span / max(shipments, 1)
        self._parcel_slot = span / max(parcels, 1)
        self._kind_salt = mix64(seed * 1_000_003 + 21)
        self._ship_salt = mix64(seed * 1_000_003 + 22)
        self._parcel_salt = mix64(seed * 1_000_003 + 23)
        self._rng = random.Random()
        pools = random.Random(mix64(seed * 1_000_003 + 24))
        self.method_ids = tuple(fakedata.uuid4(pools) for _ in range(5))
        self.channel_ids = tuple(fakedata.uuid4(pools) for _ in range(3))
        self.warehouse_ids = tuple(fakedata.uuid4(pools) for _ in range(2))
        self.store_ids = tuple(fakedata.uuid4(pools) for _ in range(6))
        assign = random.Random(mix64(seed * 1_000_003 + 25))
        draw = assign.random
        self.parcel_shipment = array(
            "l", sorted(int(draw() * shipments) for _ in range(parcels)) if shipments else ()
        )

    # -- shipments ---------------------------------------------------------------------

    def ship_core(self, seq: int) -> tuple[str, bool, str, int]:
        """`(type, is_outbound, state, created)` of a seeded shipment, from one hash.

        Parcels read it too, so a parcel's flags agree with its shipment's seeded state.
        """
        h = mix64(self._kind_salt ^ seq)
        roll = h % 100
        kind = "delivery" if roll < 80 else "collect" if roll < 90 else "internal"
        outbound = kind != "delivery" or (h >> 8) % 100 < 85
        created = self.start + int((seq + ((h >> 32) % 1_000_000) / 2_000_000) * self._slot)
        age = self.end - created
        state_roll = (h >> 16) % 100
        if state_roll < 3:
            state = "canceled"
        elif age < 2 * DAY or (state_roll < 5 and age < 30 * DAY):
            state = "open"
        elif age < 5 * DAY:
            state = "in_transit"
        else:
            state = "finished"
        return kind, outbound, state, created

    def shipment(self, seq: int, *, detail: bool) -> dict[str, Any]:
        kind, outbound, state, created = self.ship_core(seq)
        return self._shipment(seq, kind, outbound, state, created, None, detail)

    def new_shipment(self, seq: int, created: int) -> dict[str, Any]:
        """An inserted shipment: open and editable, created and updated at `created`."""
        h = mix64(self._kind_salt ^ seq)
        kind = "delivery" if h % 100 < 90 else "collect"
        return self._shipment(seq, kind, True, "open", created, created, True)

    def _location(self, entity_type: str, entity_id: str, reference: str) -> dict[str, Any]:
        return {
            "entity_type": entity_type,
            "entity_id": entity_id,
            "carrier": {
                "is_carrier_location": bool(reference),
                "carrier_location_reference": reference,
            },
        }

    def _shipment(
        self,
        seq: int,
        kind: str,
        outbound: bool,
        state: str,
        created: int,
        updated: int | None,
        detail: bool,
    ) -> dict[str, Any]:
        rng = self._rng
        rng.seed(mix64(self._ship_salt + seq))
        rand = rng.random
        warehouse = self.warehouse_ids[int(rand() * len(self.warehouse_ids))]
        customer_place = fakedata.uuid4(rng)
        pickup = rand() < 0.15
        reference = f"{pick(rng, ('NL', 'BE'))}-{between(rng, 100000, 999999)}" if pickup else ""
        prior: list[str] = []
        if kind == "delivery" and outbound:
            source = self._location("location", warehouse, "")
            target = self._location("location" if pickup else "address", customer_place, reference)
        elif kind == "delivery":  # a return: from the customer back to the warehouse
            source = self._location("address", customer_place, "")
            target = self._location("location", warehouse, "")
            if seq > 0 and self.shipments:
                prior = [self.shipment_codec.encode(int(rand() * min(seq, self.shipments)))]
        elif kind == "collect":
            store = self.store_ids[int(rand() * len(self.store_ids))]
            source = self._location("location", warehouse, "")
            target = self._location("location", store, "")
        else:
            other = self.store_ids[int(rand() * len(self.store_ids))]
            source = self._location("location", warehouse, "")
            target = self._location("location", other, "")
        ship_at = created + between(rng, 2 * HOUR, 3 * DAY)
        estimated = ship_at if rand() < 0.7 else ship_at + between(rng, -4, 12) * HOUR
        expected = ship_at + between(rng, 1, 3) * DAY
        listed = state in ("in_transit", "finished") or (state == "open" and rand() < 0.4)
        finished = state in ("finished", "canceled")
        complete = state in ("in_transit", "finished") and rand() < 0.97
        if updated is None:
            if state == "finished":
                updated = expected + between(rng, 0, 12 * HOUR)
            elif state == "in_transit":
                updated = ship_at + between(rng, 0, 6 * HOUR)
            elif state == "canceled":
                updated = created + between(rng, 10 * 60, 2 * DAY)
            else:
                updated = created + (between(rng, 0, HOUR) if listed else 0)
            if rand() < 0.1:  # edited again long after: an address fix, a late note
                updated = max(updated, created + int(rand() * (self.end - created)))
            updated = max(created, min(updated, self.end))
        contact = (
            self.contact_codec.encode(int(rand() * self.contacts))
            if self.contacts
            else fakedata.uuid4(rng)
        )
        record: dict[str, Any] = {
            "id": self.shipment_codec.encode(seq),
            "number": f"SHP-{10_000_001 + seq}",
            "type": kind,
            "method_id": self.method_ids[int(rand() * len(self.method_ids))],
            "contact_id": contact,
            "channel_id": self.channel_ids[int(rand() * len(self.channel_ids))],
            "addressing": {"to": target, "from": source},
            "ship_at": lcs_time(ship_at),
            "estimated_ship_at": lcs_time(estimated),
            "expected_at": lcs_time(expected),
            "stack_id": fakedata.uuid4(rng),
            "is_editable": state == "open",
            "is_outbound": outbound,
            "is_listed": listed,
            "is_finished": finished,
            "is_in_transit": state == "in_transit",
            "is_complete": complete,
            "is_overcomplete": complete and rand() < 0.01,
            "is_canceled": state == "canceled",
            "secret": fakedata.hex_token(rng, 32),
            "prior_shipments": prior,
            "list_id": fakedata.uuid4(rng) if listed else "",
            "created_at": lcs_time(created),
            "updated_at": lcs_time(updated),
        }
        if detail:
            self._shipment_detail(rng, record, state)
        return record

    def _shipment_detail(self, rng: random.Random, record: dict[str, Any], state: str) -> None:
        """The detail-only fields (LcsShipment, 003:98270), drawn after the list fields."""
        moving = state in ("in_transit", "finished")
        record["order_id"] = fakedata.uuid4(rng)
        record["is_labeled"] = moving
        record["is_boxed"] = moving
        record["is_handled"] = moving or (record["is_listed"] and rng.random() < 0.5)
        items = []
        order_number = between(rng, 100000, 999999)
        serviced = False
        for position in range(between(rng, 1, 5)):
            product = self.catalogue[int(rng.random() * len(self.catalogue))]
            service: list[dict[str, Any]] = []
            if rng.random() < 0.05:
                serviced = True
                paper = pick(rng, ("red", "gold", "kraft"))
                service = [
                    {
                        "option": "giftwrap",
                        "configuration": [{"key": "packing_paper", "value": paper}],
                    }
                ]
            items.append(
                {
                    "id": fakedata.uuid4(rng),
                    "reference": f"ORD-{order_number}-{position + 1}",
                    "sku": product.sku,
                    "position": _bin(rng),
                    "order_item_id": fakedata.uuid4(rng),
                    "claim_item_id": fakedata.uuid4(rng),
                    "description": product.description,
                    "is_listed": record["is_listed"],
                    "is_handled": record["is_handled"],
                    "is_boxed": moving,
                    "is_in_transit": state == "in_transit",
                    "is_finished": state == "finished",
                    "is_missing": moving and rng.random() < 0.01,
                    "hs_code": product.hs_code,
                    "service": service,
                }
            )
        record["is_serviced"] = serviced
        record["items"] = items
        record["backorders"] = [self._correction(rng)] if rng.random() < 0.05 else []
        record["overage"] = [self._correction(rng)] if rng.random() < 0.02 else []

    def _correction(self, rng: random.Random) -> dict[str, Any]:
        product = self.catalogue[int(rng.random() * len(self.catalogue))]
        return {
            "sku": product.sku,
            "quantity": between(rng, 1, 3),
            "description": product.description,
            "position": _bin(rng),
        }

    # -- parcels -----------------------------------------------------------------------

    def seeded_parcels_of(self, shipment_seq: int) -> range:
        """Sequence numbers of the seeded parcels that were generated for a seeded shipment."""
        assign = self.parcel_shipment
        return range(
            bisect.bisect_left(assign, shipment_seq), bisect.bisect_right(assign, shipment_seq)
        )

    def parcel(self, seq: int) -> dict[str, Any]:
        if self.shipments:
            shipment = self.parcel_shipment[seq]
            _, outbound, state, shipment_created = self.ship_core(shipment)
            siblings = self.seeded_parcels_of(shipment)
            # Packed within a day of the shipment, and before the next shipment is created
            # (those start at least half a slot later), so creation order is sequence order.
            window = min(0.5 * self._slot, DAY)
            created = shipment_created + int(
                window * (seq - siblings.start + 1) / (len(siblings) + 1)
            )
            shipment_id: str | None = self.shipment_codec.encode(shipment)
        else:  # parcels without simulated shipments point at shipments nobody can fetch
            h = mix64(self._kind_salt ^ ~seq)
            outbound, state, shipment_id = True, "finished", None
            created = self.start + int((seq + (h % 1000) / 2000) * self._parcel_slot)
        return self._parcel(seq, shipment_id, outbound, state, created, seeded=True)

    def new_parcel(self, seq: int, shipment_id: str, created: int) -> dict[str, Any]:
        """An inserted parcel: labelled, not yet handed to the carrier."""
        return self._parcel(seq, shipment_id, True, "open", created, seeded=False)

    def _parcel(
        self,
        seq: int,
        shipment_id: str | None,
        outbound: bool,
        state: str,
        created: int,
        *,
        seeded: bool,
    ) -> dict[str, Any]:
        rng = self._rng
        rng.seed(mix64(self._parcel_salt + seq))
        rand = rng.random
        if shipment_id is None:
            shipment_id = fakedata.uuid4(rng)
        requested = created + between(rng, 60, HOUR) if seeded else created
        ship_at = created + between(rng, HOUR, 20 * HOUR)
        in_transit_at: int | None = None
        finished_at: int | None = None
        delivered = False
        if state in ("in_transit", "finished"):
            in_transit_at = ship_at + between(rng, 0, 3 * HOUR)
        if state == "finished":
            assert in_transit_at is not None
            finished_at = in_transit_at + between(rng, 12 * HOUR, 60 * HOUR)
            delivered = rand() < 0.98  # the rest came back to the sender
        elif state == "canceled":
            finished_at = created + between(rng, HOUR, DAY)
        if seeded:  # nothing happens after the end of the seeded history
            if in_transit_at is not None and in_transit_at > self.end:
                in_transit_at = finished_at = None
                delivered = False
            if finished_at is not None and finished_at > self.end:
                finished_at = None
                delivered = False
        updated = max(t for t in (created, requested, in_transit_at, finished_at) if t is not None)
        if seeded:
            updated = min(updated, self.end) if updated > created else created
        carrier = "postnl" if rand() < 0.7 else "dhl"
        if carrier == "postnl":
            code = "3S" + "".join(chr(65 + int(rand() * 26)) for _ in range(4))
            code += f"{rng.getrandbits(32) % 10**9:09d}"
            url = f"https://jouw.postnl.nl/track-and-trace/{code}"
            label_text = pick(rng, ("PostNL Standaard", "PostNL Avondbezorging"))
        else:
            code = f"JVGL{rng.getrandbits(64) % 10**16:016d}"
            url = f"https://www.dhl.com/nl-en/home/tracking.html?tracking-id={code}"
            label_text = pick(rng, ("DHL Parcel Connect", "DHL Europlus"))
        items = []
        for _ in range(between(rng, 1, 4)):
            product = self.catalogue[int(rand() * len(self.catalogue))]
            quantity = 1 if rand() < 0.7 else between(rng, 2, 5)
            items.append(
                {
                    "id": fakedata.uuid4(rng),
                    "sku": product.sku,
                    "quantity": quantity,
                    "description": product.description,
                }
            )
        finished = finished_at is not None
        return {
            "id": self.parcel_codec.encode(seq),
            "number": f"PCL-{20_000_001 + seq}",
            "weight": between(rng, 100, 25_000),
            "length": between(rng, 10, 120),
            "width": between(rng, 10, 80),
            "height": between(rng, 2, 60),
            "tracking_code": code,
            "tracking_url": url,
            "position": f"DOCK-{between(rng, 1, 6)}",
            "label": {
                "file_id": fakedata.uuid4(rng),
                "reference": code,
                "label_text": label_text,
                "requested_at": lcs_time(requested),
            },
            "shipment_id": shipment_id,
            "count": sum(item["quantity"] for item in items),
            "items": items,
            "is_in_transit": in_transit_at is not None and not finished,
            "is_delivered": delivered,
            "is_outbound": outbound,
            "is_finished": finished,
            "file_id": fakedata.uuid4(rng),
            "ship_at": lcs_time(ship_at),
            "in_transit_at": None if in_transit_at is None else lcs_time(in_transit_at),
            "finished_at": None if finished_at is None else lcs_time(finished_at),
            "created_at": lcs_time(created),
            "updated_at": lcs_time(updated),
        }


def _bin(rng: random.Random) -> str:
    """A warehouse position such as `B-07-03` (aisle, rack, shelf)."""
    return f"{chr(65 + int(rng.random() * 8))}-{between(rng, 1, 24):02d}-{between(rng, 1, 6):02d}"


def parcel_item(rng: random.Random, item: dict[str, Any]) -> dict[str, Any]:
    """A LcsParcelItem from a partial one: an id is drawn when missing; quantity is an int."""
    quantity = item.get("quantity", 1)
    if isinstance(quantity, bool) or not isinstance(quantity, int):
        raise ValueError(f"parcel item quantity must be an integer, not {quantity!r}")
    return {
        "id": str(item.get("id") or fakedata.uuid4(rng)),
        "sku": str(item["sku"]),
        "quantity": quantity,
        "description": str(item.get("description", "")),
    }


# --------------------------------------------------------------------------- price groups

GROUP_NAMES = ("Retail", "Wholesale", "B2B Benelux", "Outlet", "Employees", "Marketplace")
STANDARD_VAT = {"NL": 21, "BE": 21, "DE": 19}
REDUCED_VAT = {"NL": 9, "BE": 6, "DE": 7}
US_SALES_TAX = (("US", "Florida", 6), ("US", "California", 7))


def vat_lines(product: Product, with_us: bool) -> list[dict[str, Any]]:
    """A price's VAT lines: one per country (no region in the EU), plus US states' sales tax."""
    rates = REDUCED_VAT if product.reduced_vat else STANDARD_VAT
    lines = [
        {"rate": rate, "country": country, "administrative_area": ""}
        for country, rate in rates.items()
    ]
    if with_us:
        lines += [
            {"rate": rate, "country": country, "administrative_area": area}
            for country, area, rate in US_SALES_TAX
        ]
    return lines


def make_group(rng: random.Random, index: int, created_ms: int, updated_ms: int) -> dict[str, Any]:
    name = GROUP_NAMES[index] if index < len(GROUP_NAMES) else f"Price group {index + 1}"
    return {
        "id": fakedata.uuid4(rng),
        "name": name,
        "is_including_vat": name in ("Retail", "Outlet", "Employees", "Marketplace"),
        "currency": "EUR" if rng.random() < 0.85 or index == 0 else pick(rng, ("USD", "GBP")),
        "metadata": {},
        "deleted_at": None,
        "created_at": ms_time(created_ms),
        "updated_at": ms_time(updated_ms),
    }


def _discount(index: int) -> float:
    return (1.0, 0.7, 0.75, 0.6, 0.5, 1.05)[index] if index < 6 else 0.9


def _midnight_after(ms: int) -> int:
    return (ms // (DAY * 1000) + 1) * DAY * 1000


def make_prices(
    rng: random.Random,
    group: dict[str, Any],
    index: int,
    catalogue: Sequence[Product],
    count: int,
    start_ms: int,
    end_ms: int,
) -> list[dict[str, Any]]:
    """`count` prices of one group in creation order.

    About four in five rows are the one price of a distinct sku; the rest are more prices of
    those skus: older ones (history) or ones that become active after the seeded history ends
    (planned prices). `(sku, active_at)` is unique within the group, as PUT upserts on it.
    """
    if count <= 0 or not catalogue:
        return []
    distinct = min(len(catalogue), max(1, round(count * 0.8)))
    products = rng.sample(list(catalogue), distinct)
    chosen = products + [products[int(rng.random() * distinct)] for _ in range(count - distinct)]
    rng.shuffle(chosen)
    created_times = sorted(start_ms + int(rng.random() * (end_ms - start_ms)) for _ in chosen)
    with_us = {p.sku: rng.random() < 0.3 for p in products}
    taken: set[tuple[str, int]] = set()
    seen: set[str] = set()
    prices = []
    for product, created in zip(chosen, created_times, strict=True):
        planned = product.sku in seen and rng.random() < 0.5
        seen.add(product.sku)
        if planned:
            active = _midnight_after(end_ms) + between(rng, 0, 900) * DAY * 1000
        else:
            active = _midnight_after(created)
        while (product.sku, active) in taken:
            active += DAY * 1000
        taken.add((product.sku, active))
        amount = round(product.amount * _discount(index) * (1 + (rng.random() - 0.5) * 0.2))
        original = amount if rng.random() < 0.7 else round(amount * 1.25)
        prices.append(
            {
                "id": fakedata.uuid4(rng),
                "sku": product.sku,
                "amount": amount,
                "original_amount": original,
                "vat": vat_lines(product, with_us[product.sku]),
                "price_group_id": group["id"],
                "active_at": ms_time(active),
                "created_at": ms_time(created),
            }
        )
    return prices


__all__ = [
    "CONTACT_KEYS",
    "GROUP_KEYS",
    "PARCEL_KEYS",
    "PRICE_KEYS",
    "SHIPMENT_DETAIL_KEYS",
    "SHIPMENT_LIST_KEYS",
    "IdCodec",
    "LcsGenerator",
    "Product",
    "RelGenerator",
    "lcs_time",
    "make_catalogue",
    "make_group",
    "make_prices",
    "mix64",
    "ms_time",
    "parcel_item",
    "vat_lines",
]
