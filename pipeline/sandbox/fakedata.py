"""Small seeded generators of plausible personal and organisational data.

The simulators need records that look like the documented examples (Faker-style names such as
"West Brian" or "Kohler Underpass", Belgian phone numbers, postal codes that keep their leading
zeros) without pulling in a dependency. Every function takes the `random.Random` to draw from,
so a simulator built with the same seed always produces the same data.
"""

from __future__ import annotations

import random
import re
from datetime import date

# fmt: off
FIRST_NAMES: tuple[str, ...] = (
    "Roman", "Santos", "Dexter", "Tracy", "Yael", "Jeneva", "Danny", "Gale", "Diedre", "Shad",
    "Laurice", "Marvin", "Nathalie", "Clifford", "Emma", "Lucas", "Louise", "Noah", "Olivia",
    "Liam", "Mila", "Arthur", "Elena", "Jules", "Lotte", "Victor", "Anouk", "Thomas", "Sofie",
    "Milan", "Charlotte", "Adam", "Julie", "Wout", "Fleur", "Kobe", "Marie", "Bram", "Ines",
    "Hugo", "Amber", "Finn", "Nora", "Seppe", "Hanne", "Jonas", "Lena", "Robbe", "Zoe",
    "Kendra", "Alvin", "Myrtle", "Desmond", "Priscilla", "Herbert", "Tamika", "Orville",
)
LAST_NAMES: tuple[str, ...] = (
    "Ferry", "Bosco", "Smith", "Becker", "Barton", "Crist", "Ocean", "Rodriguez", "Towne",
    "Johnston", "Boehm", "Prohaska", "Abernathy", "Mohr", "Schroeder", "Lockman", "Tillman",
    "Feeney", "Kohler", "Daugherty", "Pouros", "Quitzon", "Rau", "Kiehn", "Wisozk", "Dach",
    "Lang", "Carroll", "Peeters", "Janssens", "Maes", "Jacobs", "Mertens", "Willems", "Claes",
    "Goossens", "Wouters", "De Smet", "Dubois", "Lambert", "Dupont", "Martin", "Hermans",
    "Vermeulen", "Leroy", "Renard", "Hahn", "Gutmann", "Kuhlman", "Stroman", "Heller",
    "Bednar", "Krajcik", "Runolfsdottir", "O'Keefe", "Schinner", "Veum", "Zboncak",
)
_CITY_PREFIXES: tuple[str, ...] = (
    "", "", "", "West ", "East ", "North ", "South ", "New ", "Port ", "Lake ",
)
_CITY_SUFFIXES: tuple[str, ...] = (
    "town", "fort", "furt", "ville", "view", "borough", "side", "haven", "burgh", "stad", "",
)
_STREET_SUFFIXES: tuple[str, ...] = (
    "Route", "Underpass", "Street", "Stream", "Rapid", "Parkway", "Corner", "Islands", "Avenue",
    "Lane", "Road", "Square", "Crossing", "Ridge", "Plaza", "Court", "Drive", "Way", "Meadow",
)
_EMAIL_TLDS: tuple[str, ...] = ("name", "com", "io", "co", "net", "org", "be", "info", "biz")
_COMPANY_SUFFIXES: tuple[str, ...] = ("Group", "LLC", "Inc", "and Sons", "BV", "NV", "Ltd")

SENIORITIES: tuple[str, ...] = (
    "", "Senior", "Junior", "Lead", "Chief", "Assistant", "Deputy", "Regional", "Head",
)
DEPARTMENTS: tuple[str, ...] = (
    "Sales", "Delivery", "Warehouse", "Finance", "Marketing", "Logistics", "Customer Care",
    "Merchandising", "Procurement", "Fleet", "Quality", "Field", "Export", "Retail", "Key Account",
    "Operations", "IT", "HR", "Compliance", "Trade Marketing",
)
ROLES: tuple[str, ...] = (
    "Manager", "Supervisor", "Agent", "Officer", "Coordinator", "Analyst", "Representative",
    "Planner", "Controller", "Driver", "Man", "Clerk", "Director", "Auditor", "Administrator",
)
REGIONS: tuple[str, ...] = (
    "Antwerp", "Brussels", "Ghent", "Liege", "Namur", "Bruges", "Leuven", "Mons", "Casablanca",
    "Tunis", "Algiers", "Dakar", "Abidjan", "Paris", "Lyon", "Lille", "Rabat", "Sfax", "Oran",
    "Marrakesh", "North", "South", "East", "West", "Central", "Coastal", "Export", "Online",
)
# fmt: on


_PLACE_WORDS = tuple(w.replace(" ", "").replace("'", "") for w in FIRST_NAMES + LAST_NAMES)
_STREET_WORDS = LAST_NAMES + FIRST_NAMES


def pick(rng: random.Random, options: tuple[str, ...]) -> str:
    """`rng.choice`, several times faster; 200k-record datasets draw millions of these."""
    return options[int(rng.random() * len(options))]


def between(rng: random.Random, low: int, high: int) -> int:
    """`rng.randint(low, high)`, several times faster."""
    return low + int(rng.random() * (high - low + 1))


def first_name(rng: random.Random) -> str:
    return pick(rng, FIRST_NAMES)


def last_name(rng: random.Random) -> str:
    return pick(rng, LAST_NAMES)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def email(rng: random.Random, first: str | None = None, last: str | None = None) -> str:
    """Faker-like address: `gale@rodriguez.name`, `diedre_towne@langcarroll.name`."""
    first = _slug(first or first_name(rng))
    company = _slug(last_name(rng)) + (_slug(last_name(rng)) if rng.random() < 0.4 else "")
    shape = rng.random()
    if shape < 0.35:
        local = first
    elif shape < 0.7:
        local = f"{first}_{_slug(last or last_name(rng))}"
    else:
        local = f"{first}.{_slug(last or last_name(rng))}"
    return f"{local}@{company}.{pick(rng, _EMAIL_TLDS)}"


def city(rng: random.Random) -> str:
    base = pick(rng, _PLACE_WORDS)
    suffix = pick(rng, _CITY_SUFFIXES)
    return f"{pick(rng, _CITY_PREFIXES)}{base}{suffix}"


def street(rng: random.Random) -> str:
    """`Johns Route`, or with a house number in front as in `678 Daugherty Corner`."""
    name = pick(rng, _STREET_WORDS)
    text = f"{name} {pick(rng, _STREET_SUFFIXES)}"
    if rng.random() < 0.25:
        text = f"{between(rng, 1, 9999)} {text}"
    return text


def building(rng: random.Random) -> str:
    return str(between(rng, 1, 300) if rng.random() < 0.5 else between(rng, 1000, 99999))


def building_addon(rng: random.Random) -> str:
    return f"{pick(rng, ('Apt.', 'Suite'))} {between(rng, 100, 999)}"


def postal_code(rng: random.Random) -> str:
    """Text, never a number: `04975` keeps its zero and `68658-3184` has a ZIP+4 part."""
    roll = rng.random()
    if roll < 0.15:
        return f"0{between(rng, 1000, 9999)}"
    if roll < 0.3:
        return f"{between(rng, 10000, 99999)}-{between(rng, 1000, 9999)}"
    if roll < 0.55:
        return str(between(rng, 1000, 9999))
    return str(between(rng, 10000, 99999))


def phone(rng: random.Random) -> str:
    """Already normalised the way Soho stores it: `+3256980144`."""
    return f"+32{pick(rng, ('2', '3', '9', '4', '56', '50', '47'))}{between(rng, 1000000, 9999999)}"


def normalise_phone(raw: str) -> str:
    """Mimic Soho's storage: `+32(0)56/98.01.44` comes back as `+3256980144`."""
    raw = raw.replace("(0)", "")
    digits = re.sub(r"\D", "", raw)
    return f"+{digits}" if raw.strip().startswith("+") else digits


def birth_date(rng: random.Random) -> str:
    return f"{between(rng, 1940, 2004)}-{between(rng, 1, 12):02d}-{between(rng, 1, 28):02d}"


def company(rng: random.Random) -> str:
    return f"{last_name(rng)} {pick(rng, _COMPANY_SUFFIXES)}"


def domain(name: str, number: int) -> str:
    """`quitzonrau-kiehn-7` style tenant slug."""
    return f"{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')}-{number}"


def job_title(rng: random.Random) -> str:
    """An authority name such as `Delivery Man` or `Senior Sales Supervisor Antwerp`."""
    parts = [pick(rng, SENIORITIES), pick(rng, DEPARTMENTS), pick(rng, ROLES)]
    if rng.random() < 0.5:
        parts.append(pick(rng, REGIONS))
    return " ".join(p for p in parts if p)


class JobTitles:
    """Unique authority names: natural titles first, then numbered (`Sales Manager 2`).

    Remembers the last suffix per title, so drawing 200k names stays linear.
    """

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self._suffix: dict[str, int] = {}

    def draw(self, taken: set[str] | dict[str, int]) -> str:
        for _ in range(2):
            name = job_title(self.rng)
            if name not in taken:
                return name
        n = self._suffix.get(name, 1) + 1
        while f"{name} {n}" in taken:
            n += 1
        self._suffix[name] = n
        return f"{name} {n}"


# --------------------------------------------------------------------------- commerce data
# Used by the Afosto simulator: ids, opaque tokens, street names without a house number, and a
# product catalogue (sku, description, customs code) that shipments, parcels and prices share.

# fmt: off
_PRODUCT_NOUNS: tuple[tuple[str, str, str], ...] = (
    ("TSH", "T-Shirt", "61091000"), ("HOD", "Hoodie", "61102090"), ("SNK", "Sneakers", "64041100"),
    ("MUG", "Mug", "69120010"), ("BAG", "Tote Bag", "42022290"), ("CAP", "Cap", "65050090"),
    ("SCK", "Socks", "61159500"), ("JKT", "Jacket", "62019300"), ("BTL", "Water Bottle", "73239300"),
    ("NBK", "Notebook", "48202000"), ("LMP", "Desk Lamp", "94052040"), ("PLW", "Pillow", "94049090"),
    ("CND", "Candle", "34060000"), ("TEA", "Tea Blend", "09024000"), ("CHC", "Chocolate Bar", "18063100"),
)
_PRODUCT_ADJECTIVES: tuple[str, ...] = (
    "Organic", "Classic", "Recycled", "Premium", "Vintage", "Everyday", "Limited", "Soft",
    "Heavy", "Slim", "Essential", "Eco",
)
_COLOURS: tuple[tuple[str, str], ...] = (
    ("BLK", "Black"), ("WHT", "White"), ("NVY", "Navy"), ("GRN", "Forest Green"),
    ("RED", "Red"), ("GRY", "Grey"), ("SND", "Sand"), ("OCH", "Ochre"),
)
_SIZES: tuple[str, ...] = ("XS", "S", "M", "L", "XL")
# fmt: on


def uuid4(rng: random.Random) -> str:
    """A version-4 UUID string drawn from `rng` (uuid.uuid4 would not be seeded)."""
    value = rng.getrandbits(128)
    value = (value & ~(0xF000 << 64)) | (0x4000 << 64)  # version nibble
    value = (value & ~(0xC000 << 48)) | (0x8000 << 48)  # RFC 4122 variant
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def hex_token(rng: random.Random, length: int = 32) -> str:
    """Lowercase hex of `length` characters: secrets, version tokens, file references."""
    return f"{rng.getrandbits(length * 4):0{length}x}"


def thoroughfare(rng: random.Random) -> str:
    """A street name without a house number (`Daugherty Corner`), for split address fields."""
    return f"{pick(rng, _STREET_WORDS)} {pick(rng, _STREET_SUFFIXES)}"


def product(rng: random.Random, number: int) -> tuple[str, str, str]:
    """`(sku, description, hs_code)`, e.g. `("TSH-01042-BLK-M", "Organic T-Shirt, Black, M",
    "61091000")`. `number` makes the sku unique within a catalogue."""
    code, noun, hs_code = _PRODUCT_NOUNS[int(rng.random() * len(_PRODUCT_NOUNS))]
    adjective = pick(rng, _PRODUCT_ADJECTIVES)
    if code in ("TSH", "HOD", "SNK", "SCK", "JKT", "CAP"):
        colour_code, colour = _COLOURS[int(rng.random() * len(_COLOURS))]
        size = pick(rng, _SIZES)
        return (
            f"{code}-{number:05d}-{colour_code}-{size}",
            f"{adjective} {noun}, {colour}, {size}",
            hs_code,
        )
    return f"{code}-{number:05d}", f"{adjective} {noun}", hs_code


# --------------------------------------------------------------------------- promotions data
# Used by the Sparkfly simulator: merchant brands, offer titles in the style of the upstream
# example ("Buy a Burger, Get Free Medium Fries") and redeemable codes.

# fmt: off
_BRAND_WORDS: tuple[str, ...] = (
    "Q", "Golden", "Urban", "Blue", "Sunny", "Rocket", "Happy", "Big", "Little", "Corner",
    "Maple", "Harbor", "Red", "Prime", "Fresh",
)
_BRAND_NOUNS: tuple[str, ...] = (
    "Burger", "Coffee", "Pizza", "Grill", "Bakery", "Taco", "Car Wash", "Market", "Donuts",
    "Kitchen", "Smoothies", "Deli",
)
_OFFER_ITEMS: tuple[str, ...] = (
    "Burger", "Coffee", "Smoothie", "Pizza", "Sandwich", "Burrito", "Latte", "Donut", "Salad",
    "Car Wash", "Breakfast Combo", "Milkshake",
)
_OFFER_SIDES: tuple[str, ...] = (
    "Medium Fries", "Cookie", "Drink", "Hash Brown", "Muffin", "Side Salad",
)
# No 0/O or 1/I: codes are read aloud and typed in at the point of sale.
_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
# fmt: on
_CODE_PAIRS = tuple(a + b for a in _CODE_ALPHABET for b in _CODE_ALPHABET)


def brand(rng: random.Random) -> str:
    """A merchant brand such as `Q Burger` or `Golden Bakery`."""
    return f"{pick(rng, _BRAND_WORDS)} {pick(rng, _BRAND_NOUNS)}"


def offer_title(rng: random.Random) -> str:
    """`Buy a Burger, Get Free Medium Fries`, `20% off any Latte`, `$5 off $25 or more`."""
    item = pick(rng, _OFFER_ITEMS)
    shape = rng.random()
    if shape < 0.3:
        return f"Buy a {item}, Get Free {pick(rng, _OFFER_SIDES)}"
    if shape < 0.55:
        return f"{between(rng, 2, 10) * 5}% off any {item}"
    if shape < 0.75:
        amount = between(rng, 1, 10)
        return f"${amount} off ${amount * between(rng, 3, 6)} or more"
    if shape < 0.9:
        return f"Free {item} with any purchase"
    return f"Buy One {item}, Get One Free"


def redemption_code(rng: random.Random, prefix: str = "SPK", groups: int = 2, size: int = 4) -> str:
    """A code such as `SPK-7F3K-Q9ZP`: `groups` blocks of `size` unambiguous characters."""
    parts = [prefix] if prefix else []
    for _ in range(groups):
        bits = rng.getrandbits(5 * size)
        block = ""
        for _ in range(size // 2):
            block += _CODE_PAIRS[bits & 1023]
            bits >>= 10
        if size % 2:
            block += _CODE_ALPHABET[bits & 31]
        parts.append(block)
    return "-".join(parts)


# --------------------------------------------------------------------------- Indian public data
# Used by the DigiLocker simulator: states with their two-letter codes and a large city, Indian
# person names, Aadhaar numbers (valid Verhoeff check digit) and mobile numbers, DDMMYYYY dates.

# fmt: off
INDIAN_STATES: tuple[tuple[str, str, str], ...] = (
    ("Andhra Pradesh", "ap", "Visakhapatnam"), ("Assam", "as", "Guwahati"), ("Bihar", "br", "Patna"),
    ("Chhattisgarh", "cg", "Raipur"), ("Goa", "ga", "Panaji"), ("Gujarat", "gj", "Ahmedabad"),
    ("Haryana", "hr", "Gurugram"), ("Himachal Pradesh", "hp", "Shimla"), ("Jharkhand", "jh", "Ranchi"),
    ("Karnataka", "ka", "Bengaluru"), ("Kerala", "kl", "Thiruvananthapuram"),
    ("Madhya Pradesh", "mp", "Indore"), ("Maharashtra", "mh", "Pune"), ("Manipur", "mn", "Imphal"),
    ("Meghalaya", "ml", "Shillong"), ("Mizoram", "mz", "Aizawl"), ("Nagaland", "nl", "Kohima"),
    ("Odisha", "od", "Bhubaneswar"), ("Punjab", "pb", "Ludhiana"), ("Rajasthan", "rj", "Jaipur"),
    ("Sikkim", "sk", "Gangtok"), ("Tamil Nadu", "tn", "Chennai"), ("Telangana", "ts", "Hyderabad"),
    ("Tripura", "tr", "Agartala"), ("Uttar Pradesh", "up", "Lucknow"), ("Uttarakhand", "uk", "Dehradun"),
    ("West Bengal", "wb", "Kolkata"), ("Delhi", "dl", "New Delhi"),
)
INDIAN_FIRST_NAMES: tuple[str, ...] = (
    "Sunil", "Anita", "Rahul", "Priya", "Amit", "Kavita", "Vikram", "Sunita", "Arjun", "Deepa",
    "Rajesh", "Lakshmi", "Suresh", "Meena", "Arun", "Pooja", "Manoj", "Divya", "Ravi", "Neha",
    "Sanjay", "Asha", "Kiran", "Rekha", "Venkat", "Fatima", "Imran", "Harpreet", "Gurpreet", "Joseph",
)
INDIAN_LAST_NAMES: tuple[str, ...] = (
    "Kumar", "Sharma", "Verma", "Singh", "Patel", "Reddy", "Nair", "Iyer", "Gupta", "Das",
    "Mukherjee", "Banerjee", "Joshi", "Kulkarni", "Deshpande", "Rao", "Naidu", "Pillai", "Menon",
    "Khan", "Ahmed", "Gill", "Sandhu", "Chauhan", "Yadav", "Mishra", "Pandey", "Bose", "Sen", "Thomas",
)
# fmt: on

_VERHOEFF_D = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 2, 3, 4, 0, 6, 7, 8, 9, 5),
    (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
    (3, 4, 0, 1, 2, 8, 9, 5, 6, 7),
    (4, 0, 1, 2, 3, 9, 5, 6, 7, 8),
    (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
    (6, 5, 9, 8, 7, 1, 0, 4, 3, 2),
    (7, 6, 5, 9, 8, 2, 1, 0, 4, 3),
    (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
    (9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
)
_VERHOEFF_P = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 5, 7, 6, 2, 8, 3, 0, 9, 4),
    (5, 8, 0, 3, 7, 9, 6, 1, 4, 2),
    (8, 9, 1, 6, 0, 4, 3, 5, 2, 7),
    (9, 4, 5, 3, 1, 2, 6, 8, 7, 0),
    (4, 2, 8, 6, 5, 7, 3, 9, 0, 1),
    (2, 7, 9, 3, 8, 0, 6, 4, 1, 5),
    (7, 0, 4, 6, 9, 1, 3, 2, 5, 8),
)
_VERHOEFF_INV = (0, 4, 3, 2, 1, 5, 6, 7, 8, 9)


def verhoeff_digit(digits: str) -> int:
    """The Verhoeff check digit to append to `digits` (Aadhaar's last digit)."""
    check = 0
    for i, char in enumerate(reversed(digits)):
        check = _VERHOEFF_D[check][_VERHOEFF_P[(i + 1) % 8][int(char)]]
    return _VERHOEFF_INV[check]


def verhoeff_valid(number: str) -> bool:
    check = 0
    for i, char in enumerate(reversed(number)):
        check = _VERHOEFF_D[check][_VERHOEFF_P[i % 8][int(char)]]
    return check == 0


def indian_name(rng: random.Random) -> str:
    """`Sunil Kumar`."""
    return f"{pick(rng, INDIAN_FIRST_NAMES)} {pick(rng, INDIAN_LAST_NAMES)}"


def aadhaar_number(rng: random.Random) -> str:
    """12 digits, never starting with 0 or 1, the last a Verhoeff check digit; text, since
    it is an identifier that a client must not do arithmetic on."""
    body = f"{between(rng, 2, 9)}{between(rng, 0, 9_999_999_999):010d}"
    return body + str(verhoeff_digit(body))


def indian_mobile(rng: random.Random) -> str:
    """10 digits starting with 6-9, without the +91 prefix: `9876543210`."""
    return f"{between(rng, 6, 9)}{between(rng, 0, 999_999_999):09d}"


def ddmmyyyy(day: date) -> str:
    """`31072019`: DigiLocker's date format (keeps its leading zero only as text)."""
    return f"{day.day:02d}{day.month:02d}{day.year:04d}"
