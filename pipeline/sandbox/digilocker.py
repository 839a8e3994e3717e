"""DigiLocker "Meta APIs" simulator: signed form POSTs, each answering a whole list at once.

Why it matters to a client: nothing pages and no record carries a timestamp, so a sync is a
snapshot (issuers, then doctypes per issuer, then search parameters per doctype); every call is
a POST whose form carries `clientid`, `ts` and `hmac` = SHA-256(secret + clientid + ts), with
`ts` checked against the server clock (30 minutes); three endpoints want urlencoded forms and
three want multipart; doctype codes repeat across issuers (only `(orgid, doctype)` is a key);
`orgid` keeps leading zeros; statistics are digit strings that outgrow int32 and change once a
day (IST midnight).

Documented (seed 000): the six POST routes and their form fields, content types, the hmac
recipe, the 30-minute rule, the statuses. [ext] (SOURCES §5, the upstream `authpartner` spec):
response shapes, error codes and texts, the statistics example values. Everything else is
`[inferred]`, and a constructor parameter where a client could meet either behaviour.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import math
import random
import re
from calendar import monthrange
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from email.parser import BytesParser
from email.policy import HTTP
from hmac import compare_digest
from typing import Any, ClassVar

import orjson
from aiohttp import web

from . import fakedata
from .core import Handler, Simulator, account_secret, reason
from .fakedata import between, ddmmyyyy
from .spec import FaultTarget, Removal, SandboxSource, SandboxStream

BASE_PATH = "/public"  # the documented base is https://betaapi.digitallocker.gov.in/public
FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
# Content type per operation, as documented (000:80, 154, 232, 306, 394, 473).
ENDPOINTS: dict[str, str] = {
    "/oauth2/1/pull/doctype": FORM,
    "/oauth2/1/pull/issuers": FORM,
    "/oauth2/1/pull/parameters": FORM,
    "/statistics/1/counts": MULTIPART,
    "/account/1/pushuri": MULTIPART,
    "/account/2/verify": MULTIPART,
}
IST = timezone(timedelta(hours=5, minutes=30), "IST")
HMAC_ENCODINGS = ("hex", "base64")
# [inferred] fixed sandbox credentials, so a demo config can name them.
DEFAULT_CLIENT_ID = "DLSANDBOX01"
DEFAULT_CLIENT_SECRET = "b3f1c2d4e5a6978812ab34cd56ef7890a1b2c3d4"

# [ext] error texts of the upstream spec.
MISSING_OR_INVALID = "One or more of the mandatory parameters is missing or invalid."
TS_TEXT = "Timestamp parameter is missing or invalid"
HMAC_TEXT = "HMAC parameter is missing or invalid"
ORGID_TEXT = "The orgid parameter is missing or invalid"
DOCTYPE_TEXT = "The doctype parameter is missing or invalid"
UID_OR_MOBILE_TEXT = "Either one of uid or mobile number is mandatory"
UID_TEXT = "uid parameter is missing or invalid"
MOBILE_TEXT = "Mobile parameter is missing or invalid"
URI_TEXT = "URI parameter is missing or invalid"
DOCID_TEXT = "Docid parameter is missing or invalid"
ISSUEDATE_TEXT = "Issuedate parameter is missing or invalid"
URI_EXISTS_HERE = "URI already exists in this account"
URI_EXISTS_ELSEWHERE = "URI already exists in another account"
ACTION_TEXT = "Action parameter is missing or invalid"  # [inferred] same pattern
VALIDFROM_TEXT = "Validfrom parameter is missing or invalid"  # [inferred]
VALIDTO_TEXT = "Validto parameter is missing or invalid"  # [inferred]

_TS_RE = re.compile(r"\d{1,18}")
_DOCTYPE_RE = re.compile(r"[A-Z0-9]{5}")


def compute_hmac(secret: str, client_id: str, ts: str, encoding: str = "hex") -> str:
    """The documented `hmac`: a plain SHA-256 (not a keyed HMAC) over secret + clientid + ts.

    The encoding is undocumented: lowercase hex [inferred], or base64 (DigiLocker's keyed
    HMACs elsewhere are base64)."""
    digest = hashlib.sha256((secret + client_id + ts).encode()).digest()
    return base64.b64encode(digest).decode() if encoding == "base64" else digest.hex()


class ApiError(Exception):
    """An `{error, error_description}` answer raised from inside a handler."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description


def _invalid(text: str) -> ApiError:
    """[ext] 400 `invalid_parameter`: the general sentence, then the specific text.
    [inferred] one text per answer: the first failed check wins."""
    return ApiError(400, "invalid_parameter", f"{MISSING_OR_INVALID} {text}")


# --------------------------------------------------------------------------- catalogue
# [inferred] A realistic catalogue: national issuers first, then per-state departments and
# universities. Doctype codes follow DigiLocker's 5-character style; DRVLC, RVCER, HSCER,
# SSCER, PANCR and ADHAR are real codes, the others are plausible inventions.

# fmt: off
DOCTYPE_POOLS: dict[str, tuple[tuple[str, str, str], ...]] = {
    # pool: ((doctype, description, parameter kind), ...)
    "transport": (
        ("DRVLC", "Driving License", "dl"), ("RVCER", "Registration of Vehicles", "rc"),
        ("LRNLC", "Learner's License", "dl"), ("PUCCR", "Pollution Under Control Certificate", "rc"),
        ("FTCER", "Fitness Certificate", "rc"), ("PRMIT", "Vehicle Permit", "rc"),
        ("TXREC", "Road Tax Receipt", "rc"), ("CNDLC", "Conductor License", "dl"),
    ),
    "board": (
        ("SSCER", "Class X Marksheet", "board"), ("HSCER", "Class XII Marksheet", "board"),
        ("SPCER", "Class X Passing Certificate", "board"),
        ("HPCER", "Class XII Passing Certificate", "board"),
        ("MIGCE", "Migration Certificate", "board"), ("SKLCR", "Skill Certificate", "board"),
        ("SSCDP", "Class X Duplicate Marksheet", "board"),
        ("HSCDP", "Class XII Duplicate Marksheet", "board"),
    ),
    "revenue": (
        ("INCER", "Income Certificate", "cert"), ("CSCER", "Caste Certificate", "cert"),
        ("DMCER", "Domicile Certificate", "cert"), ("RSCER", "Residence Certificate", "cert"),
        ("OBCCR", "OBC Certificate", "cert"), ("EWSCR", "EWS Certificate", "cert"),
        ("LNREC", "Land Record", "land"), ("SRCER", "Senior Citizen Certificate", "cert"),
    ),
    "municipal": (
        ("BTCER", "Birth Certificate", "civic"), ("DTCER", "Death Certificate", "civic"),
        ("PRTAX", "Property Tax Receipt", "property"), ("TRLIC", "Trade License", "civic"),
        ("MRCER", "Marriage Certificate", "civic"), ("WTBIL", "Water Bill", "property"),
        ("BLDPM", "Building Permission", "property"),
        ("SHCER", "Shop Establishment Certificate", "civic"),
    ),
    "university": (
        ("DGCER", "Degree Certificate", "univ"), ("PDCER", "Provisional Degree Certificate", "univ"),
        ("MKSHT", "Semester Marksheet", "semester"), ("MGCER", "Migration Certificate", "univ"),
        ("DPCER", "Diploma Certificate", "univ"), ("TRCER", "Transcript", "univ"),
        ("CNSCR", "Consolidated Marksheet", "univ"), ("PHDCR", "Ph.D. Degree Certificate", "univ"),
    ),
    "pan": (
        ("PANCR", "PAN Verification Record", "pan"),
        ("ITRVC", "Income Tax Return Acknowledgement", "pan"), ("FRM16", "Form 16", "pan"),
    ),
    "aadhaar": (("ADHAR", "Aadhaar Card", "aadhaar"),),
    "epfo": (
        ("UANCD", "UAN Card", "uan"), ("PFPPO", "Pension Payment Order", "uan"),
        ("SCHCR", "Scheme Certificate", "uan"),
    ),
    "insurance": (
        ("LIPOL", "Insurance Policy", "policy"), ("PRREC", "Premium Paid Certificate", "policy"),
        ("BNSTM", "Bonus Statement", "policy"),
    ),
    "passport": (("PSPRT", "Passport Verification Record", "passport"),),
    "epic": (("EPICD", "Voter ID Card (EPIC)", "epic"),),
    "iti": (
        ("ITICE", "ITI Certificate", "iti"), ("NTCCE", "National Trade Certificate", "iti"),
        ("NACCE", "National Apprenticeship Certificate", "iti"),
    ),
    "health": (
        ("VACER", "Vaccination Certificate", "cowin"), ("ABHAC", "ABHA Card", "abha"),
    ),
}

_YEARS: tuple[str, ...] = tuple(str(y) for y in range(2024, 2004, -1))
_COURSES = ("B.A.", "B.Sc.", "B.Com.", "B.Tech", "M.A.", "M.Sc.", "MBA", "M.Tech")
_SEMESTERS = tuple(str(s) for s in range(1, 9))
_SESSIONS = ("2015-2017", "2016-2018", "2017-2019", "2018-2020", "2019-2021", "2020-2022")

# kind: ((paramname, label, example, valuelist or None), ...); `{ST}` is the state code.
PARAMETER_KINDS: dict[str, tuple[tuple[str, str, str, tuple[str, ...] | None], ...]] = {
    "dl": (("dlno", "Driving Licence Number", "{ST}0220080012345", None),
           ("dob", "Date of Birth (DD-MM-YYYY)", "15-08-1990", None)),
    "rc": (("reg_no", "Registration Number", "{ST}12AB1234", None),
           ("chasis_no", "Last 5 characters of Chassis Number", "45678", None)),
    "board": (("rroll", "Roll Number", "1234567", None),
              ("year", "Year of Passing", "2019", _YEARS)),
    "cert": (("certno", "Certificate Number", "{ST}/INC/2021/004512", None),
             ("name", "Applicant Name", "Sunil Kumar", None)),
    "land": (("district", "District", "Pune", None),
             ("survey_no", "Survey Number", "123/4A", None)),
    "civic": (("regno", "Registration Number", "B-2019-001234", None),
              ("year", "Year of Registration", "2019", _YEARS)),
    "property": (("propid", "Property ID", "0451-12-0987", None),),
    "univ": (("enrolno", "Enrollment Number", "2015BCS1023", None),
             ("year", "Year of Passing", "2019", _YEARS),
             ("course", "Course", "B.Tech", _COURSES)),
    "semester": (("enrolno", "Enrollment Number", "2015BCS1023", None),
                 ("semester", "Semester", "6", _SEMESTERS),
                 ("year", "Year of Examination", "2019", _YEARS)),
    "pan": (("panno", "PAN", "ABCPK1234D", None),
            ("PANFullName", "Full Name as on PAN", "Sunil Kumar", None)),
    "aadhaar": (("uid", "Aadhaar Number", "999999990019", None),),
    "uan": (("uan", "UAN", "100123456789", None),),
    "policy": (("policyno", "Policy Number", "123456789", None),
               ("dob", "Date of Birth (DD-MM-YYYY)", "15-08-1990", None)),
    "passport": (("fileno", "File Number", "MU1061234567812", None),
                 ("dob", "Date of Birth (DD-MM-YYYY)", "15-08-1990", None)),
    "epic": (("epicno", "EPIC Number", "ABC1234567", None),),
    "iti": (("rollno", "Roll Number", "R170812004512", None),
            ("session", "Session", "2017-2019", _SESSIONS)),
    "cowin": (("ref_id", "Beneficiary Reference ID", "12345678901234", None),),
    "abha": (("abha_no", "ABHA Number", "91-1234-5678-9012", None),),
    "generic": (("docno", "Document Number", "{ST}/2021/004512", None),),
}

# (name, issuerid, categories, pool, description)
NATIONAL_ISSUERS: tuple[tuple[str, str, str, str, str], ...] = (
    ("Central Board of Secondary Education", "in.gov.cbse", "Education", "board",
     "Class X and Class XII marksheets, passing and migration certificates"),
    ("Ministry of Road Transport and Highways", "in.gov.transport", "Transport", "transport",
     "Driving licences and vehicle registration certificates from the national registers"),
    ("Income Tax Department", "in.gov.pan", "Identity,Tax", "pan",
     "PAN verification records and income tax documents"),
    ("Unique Identification Authority of India", "in.gov.uidai", "Identity", "aadhaar",
     "Aadhaar"),
    ("Council for the Indian School Certificate Examinations", "in.org.cisce", "Education",
     "board", "ICSE and ISC marksheets and certificates"),
    ("National Institute of Open Schooling", "in.nios", "Education", "board",
     "Secondary and senior secondary marksheets and certificates"),
    ("Employees' Provident Fund Organisation", "in.gov.epfindia", "Employment,Finance", "epfo",
     "UAN cards, pension payment orders and scheme certificates"),
    ("Life Insurance Corporation of India", "in.co.licindia", "Insurance", "insurance",
     "Insurance policies and premium paid certificates"),
    ("Ministry of External Affairs", "in.gov.passport", "Identity,Travel", "passport",
     "Passport verification records"),
    ("Election Commission of India", "in.gov.eci", "Identity", "epic", "Electoral photo identity cards"),
    ("Directorate General of Training", "in.gov.dgt", "Education,Skills", "iti",
     "ITI, national trade and apprenticeship certificates"),
    ("Ministry of Health and Family Welfare", "in.gov.mohfw", "Health", "health",
     "Vaccination certificates and ABHA cards"),
    ("Indian Institute of Technology Bombay", "in.ac.iitb", "Education", "university",
     "Degree certificates and marksheets of IIT Bombay"),
    ("Indian Institute of Technology Delhi", "in.ac.iitd", "Education", "university",
     "Degree certificates and marksheets of IIT Delhi"),
)

# (name, issuerid, state code)
UNIVERSITIES: tuple[tuple[str, str, str], ...] = (
    ("University of Mumbai", "in.ac.mu", "mh"), ("Anna University", "in.ac.annauniv", "tn"),
    ("Osmania University", "in.ac.osmania", "ts"), ("Gujarat University", "in.ac.gujaratuniversity", "gj"),
    ("University of Rajasthan", "in.ac.uniraj", "rj"), ("Panjab University", "in.ac.puchd", "pb"),
    ("Visvesvaraya Technological University", "in.ac.vtu", "ka"),
    ("Dr. A.P.J. Abdul Kalam Technical University", "in.ac.aktu", "up"),
    ("University of Calcutta", "in.ac.caluniv", "wb"), ("Utkal University", "in.ac.utkaluniversity", "od"),
    ("Gauhati University", "in.ac.gauhati", "as"), ("University of Kerala", "in.ac.keralauniversity", "kl"),
    ("Savitribai Phule Pune University", "in.ac.unipune", "mh"),
    ("Andhra University", "in.ac.andhrauniversity", "ap"), ("Patna University", "in.ac.patnauniversity", "br"),
)
# fmt: on

_STATES = {code: (name, city) for name, code, city in fakedata.INDIAN_STATES}
_DOCTYPE_KIND = {code: kind for pool in DOCTYPE_POOLS.values() for code, _, kind in pool}


@dataclass(frozen=True)
class _Template:
    """One catalogue entry: an issuer as it would be registered, before its orgid is drawn."""

    name: str
    issuerid: str
    categories: str
    pool: str
    description: str
    state: str = "DL"  # upper-case state code, for parameter examples


def _state_templates() -> list[_Template]:
    out: list[_Template] = []
    for state, code, city in fakedata.INDIAN_STATES:
        st = code.upper()
        out += [
            _Template(
                f"Transport Department, Government of {state}",
                f"in.gov.{code}.transport",
                "Transport",
                "transport",
                f"Driving licences and vehicle registration certificates issued in {state}",
                st,
            ),
            _Template(
                f"Board of Secondary Education, {state}",
                f"in.gov.{code}.bse",
                "Education",
                "board",
                f"Secondary and higher secondary marksheets and certificates of {state}",
                st,
            ),
            _Template(
                f"Revenue Department, Government of {state}",
                f"in.gov.{code}.revenue",
                "Certificates,Revenue",
                "revenue",
                f"Income, caste, domicile and land certificates issued in {state}",
                st,
            ),
            _Template(
                f"{city} Municipal Corporation",
                f"in.gov.{code}.{re.sub(r'[^a-z]', '', city.lower())}mc",
                "Civic Services",
                "municipal",
                f"Birth, death, property and trade records of {city}, {state}",
                st,
            ),
        ]
    for name, issuerid, code in UNIVERSITIES:
        out.append(
            _Template(
                name,
                issuerid,
                "Education",
                "university",
                f"Degree certificates and marksheets of {name}",
                code.upper(),
            )
        )
    return out


def _overflow_template(number: int) -> _Template:
    """[inferred] Issuers past the catalogue: district collectorates, numbered."""
    state, code, _city = fakedata.INDIAN_STATES[number % len(fakedata.INDIAN_STATES)]
    return _Template(
        f"District Collectorate {number}, {state}",
        f"in.gov.{code}.dc{number}",
        "Certificates,Revenue",
        "revenue",
        f"Certificates issued by district collectorate {number} of {state}",
        code.upper(),
    )


# --------------------------------------------------------------------------- statistics
# [ext] The example answer is dated 31072019 with these four totals; [inferred] they grow
# linearly from there by a daily amount (varied per seed) plus a deterministic per-day jitter
# smaller than half a day's growth, so every day's totals are fixed and never shrink.
STAT_REFERENCE_DAY = date(2019, 7, 31)
STAT_BASE: dict[str, int] = {
    "users": 25_873_490,
    "authentic_documents": 3_520_475_277,
    "issuers": 134,
    "requestors": 45,
}
STAT_DAILY_GROWTH: dict[str, float] = {
    "users": 150_000.0,
    "authentic_documents": 1_800_000.0,
    "issuers": 0.9,
    "requestors": 0.25,
}


def _row_id(year: int, month: int = 0) -> int:
    """[inferred] "Unique id of the list item": stable per (year, month); years use month 0."""
    return 18_000 + (year - 2015) * 13 + month


def _month_end(year: int, month: int) -> date:
    return date(year, month, monthrange(year, month)[1])


def _months_back(year: int, month: int, back: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) - back
    return index // 12, index % 12 + 1


def _parse_ddmmyyyy(value: str | None, *, pad: bool = False) -> date | None:
    """A calendar date from `DDMMYYYY`; with `pad` a 7-digit value gets its leading zero back
    ([inferred] `validfrom` is typed Integer in the seed, so clients may drop it)."""
    if value is None:
        return None
    if pad and len(value) == 7:
        value = "0" + value
    if not re.fullmatch(r"\d{8}", value):
        return None
    try:
        return date(int(value[4:]), int(value[2:4]), int(value[:2]))
    except ValueError:
        return None


async def _form_fields(request: web.Request) -> dict[str, str]:
    """The fields of a urlencoded or multipart body (ValueError when unreadable), read from the
    body aiohttp keeps: the account that claims a request reads it before its handler does."""
    if request.content_type == FORM:
        return {key: str(value) for key, value in (await request.post()).items()}
    header = request.headers.get("Content-Type", "")
    raw = await request.read()
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + header.encode("latin-1", "replace") + b"\r\n\r\n" + raw
    )
    if not message.is_multipart():
        raise ValueError("not a multipart body with its boundary")
    fields: dict[str, str] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str) or part.is_multipart():
            continue
        data = part.get_payload(decode=True)
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else ""
        fields[name] = text.strip() if part.get_filename() is not None else text
    return fields


# --------------------------------------------------------------------------- simulator


class DigiLockerSimulator(Simulator):
    """The six DigiLocker Meta API operations under `/public`.

    Python API for tests: `truth`, `statistics`, `add_issuer`, `remove_issuer`,
    `rename_issuer`, `add_doctype`, `remove_doctype`, `set_parameters`, `accounts`,
    `add_account`, `pushed`, `sign`, `client_id`, `client_secret`. Statistics follow
    `self.clock`, so a test moves days by replacing the clock.
    """

    name: ClassVar[str] = "digilocker"

    def __init__(
        self,
        *,
        issuers: int = 25,
        doctypes_per_issuer: tuple[int, int] = (1, 8),
        seed: int = 1,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
        max_ts_age_seconds: float = 1800,
        max_ts_future_seconds: float = 300,
        hmac_encoding: str = "hex",
        ts_offset_seconds: int = 0,
        strict_content_type: bool = True,
        access_token: str | None = None,
        accounts: int = 10,
        **core: Any,
    ) -> None:
        super().__init__(seed=seed, **core)
        if hmac_encoding not in HMAC_ENCODINGS:
            raise ValueError(f"hmac_encoding must be one of {HMAC_ENCODINGS}")
        low, high = doctypes_per_issuer
        if not 0 <= low <= high:
            raise ValueError("doctypes_per_issuer must be (low, high) with 0 <= low <= high")
        self._client_id = client_id
        self._client_secret = client_secret
        # Documented: "must not be older than 30 minutes". [inferred] future limit.
        self.max_ts_age_seconds = max_ts_age_seconds
        self.max_ts_future_seconds = max_ts_future_seconds
        # [inferred] the digest's encoding is undocumented.
        self.hmac_encoding = hmac_encoding
        # [inferred] "UNIX timestamp in IST": with 19800 the server expects epoch + 5:30.
        self.ts_offset_seconds = ts_offset_seconds
        # [inferred] the other form encoding is refused with 415; False accepts both (as a
        # PHP `$_POST` would).
        self.strict_content_type = strict_content_type
        # [inferred] the seed's OAuth2 bearer ("oauthsecurity") is accepted, not required;
        # set a token to require `Authorization: Bearer <token>`.
        self.access_token = access_token
        self.doctypes_per_issuer = (low, high)
        self._rng = random.Random(seed)
        self._account_rng = random.Random(seed * 15_485_863 + 5)
        growth_rng = random.Random(seed * 7_368_787 + 11)
        self._growth = {
            field: rate * (0.9 + 0.2 * growth_rng.random())
            for field, rate in STAT_DAILY_GROWTH.items()
        }
        self._issuers: dict[str, dict[str, str]] = {}
        self._state_of: dict[str, str] = {}
        self._doctypes: dict[str, dict[str, str]] = {}
        self._params: dict[tuple[str, str], list[dict[str, Any]]] = {}
        national = [_Template(*entry) for entry in NATIONAL_ISSUERS]
        regional = _state_templates()
        self._rng.shuffle(regional)
        self._catalogue = national + regional
        self._next_template = 0
        for _ in range(issuers):
            self.add_issuer()
        self._accounts: dict[str, dict[str, str]] = {}
        self._pushed: dict[str, dict[str, str]] = {}
        for _ in range(accounts):
            self.add_account()

    # -- credentials ---------------------------------------------------------------------

    @property
    def client_id(self) -> str:
        return self._client_id

    @property
    def client_secret(self) -> str:
        return self._client_secret

    def sign(self, ts: str) -> str:
        """The valid `hmac` for `ts` with this simulator's credentials and encoding."""
        return compute_hmac(self._client_secret, self._client_id, ts, self.hmac_encoding)

    def current_ts(self) -> str:
        """A `ts` the server accepts now (simulator clock, plus the configured offset)."""
        return str(int(self.clock().timestamp()) + self.ts_offset_seconds)

    # -- seeded data ---------------------------------------------------------------------

    def _take_template(self) -> _Template:
        used = {i["issuerid"] for i in self._issuers.values()}
        while True:
            index = self._next_template
            self._next_template += 1
            if index < len(self._catalogue):
                template = self._catalogue[index]
            else:
                template = _overflow_template(index - len(self._catalogue) + 1)
            if template.issuerid not in used:
                return template

    def _new_orgid(self) -> str:
        """[inferred] six digits as text, usually with leading zeros (`001891`)."""
        while True:
            if self._rng.random() < 0.6:
                number = between(self._rng, 1, 99_999)
            else:
                number = between(self._rng, 100_000, 999_999)
            orgid = f"{number:06d}"
            if orgid not in self._issuers:
                return orgid

    def _make_parameters(self, doctype: str, state: str) -> list[dict[str, Any]]:
        """[inferred] `valuelist` is a list of strings for closed choices, otherwise null or
        an empty string (the field is untyped upstream)."""
        kind = _DOCTYPE_KIND.get(doctype, "generic")
        params: list[dict[str, Any]] = []
        for paramname, label, example, values in PARAMETER_KINDS[kind]:
            valuelist: Any
            if values is not None:
                valuelist = list(values)
            else:
                valuelist = None if self._rng.random() < 0.7 else ""
            params.append(
                {
                    "paramname": paramname,
                    "label": label,
                    "example": example.replace("{ST}", state),
                    "valuelist": valuelist,
                }
            )
        return params

    def _draw_doctypes(self, pool: str) -> list[tuple[str, str]]:
        """[inferred] a seeded subset of the issuer kind's pool, listed in pool order."""
        entries = DOCTYPE_POOLS[pool]
        low, high = self.doctypes_per_issuer
        count = min(between(self._rng, low, high), len(entries))
        chosen = sorted(self._rng.sample(range(len(entries)), count))
        return [(entries[i][0], entries[i][1]) for i in chosen]

    def add_account(self, uid: str | None = None, mobile: str | None = None) -> dict[str, str]:
        """Register a DigiLocker account (for verify and pushuri); ids are seeded."""
        rng = self._account_rng
        account = {
            "digilockerid": fakedata.uuid4(rng),  # [ext] a 36-character uuid string
            "uid": uid or fakedata.aadhaar_number(rng),
            "mobile": mobile or fakedata.indian_mobile(rng),
            "name": fakedata.indian_name(rng),
        }
        self._accounts[account["digilockerid"]] = account
        return dict(account)

    # -- Python API ----------------------------------------------------------------------

    def truth(
        self, resource: str = "issuers", *, orgid: str | None = None, doctype: str | None = None
    ) -> list[dict[str, Any]]:
        """What the API serves now (deep copies), in server order.

        `issuers`; `doctypes` for `orgid` (the `documents` list), or every issuer's with an
        `orgid` column added; `parameters` for `(orgid, doctype)` (the bare array), or every
        pair's (of `orgid` when given) with `orgid` and `doctype` columns; `statistics` (one row); `accounts`;
        `pushed`. Raises KeyError for an unknown orgid or doctype.
        """
        if resource == "issuers":
            return [dict(i) for i in self._issuers.values()]
        if resource == "doctypes":
            if orgid is not None:
                return [
                    {"doctype": code, "description": text}
                    for code, text in self._doctypes[orgid].items()
                ]
            return [
                {"orgid": org, "doctype": code, "description": text}
                for org, docs in self._doctypes.items()
                for code, text in docs.items()
            ]
        if resource == "parameters":
            if orgid is not None and doctype is not None:
                return copy.deepcopy(self._params[(orgid, doctype)])
            return [
                {"orgid": org, "doctype": code, **copy.deepcopy(param)}
                for (org, code), params in self._params.items()
                if orgid is None or org == orgid
                for param in params
            ]
        if resource == "statistics":
            return [self.statistics()]
        if resource == "accounts":
            return self.accounts()
        if resource == "pushed":
            return self.pushed()
        raise ValueError(
            f"unknown resource {resource!r}; use issuers, doctypes, parameters, statistics, "
            "accounts or pushed"
        )

    def add_issuer(self, **overrides: Any) -> dict[str, str]:
        """Register the catalogue's next issuer; returns it as `/pull/issuers` serves it.

        `overrides` may set `orgid`, `issuerid`, `name`, `description`, `categories` (coerced
        to text) and `doctypes`: `(code, description)` pairs or `{doctype, description}`
        dicts, replacing the drawn ones. ValueError on a taken orgid or issuerid.
        """
        known = {"orgid", "issuerid", "name", "description", "categories", "doctypes"}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"unknown issuer fields {sorted(unknown)}")
        template = self._take_template()
        orgid = str(overrides["orgid"]) if "orgid" in overrides else self._new_orgid()
        if orgid in self._issuers:
            raise ValueError(f"orgid {orgid!r} already exists")
        record = {
            "issuerid": str(overrides.get("issuerid", template.issuerid)),
            "name": str(overrides.get("name", template.name)),
            "description": str(overrides.get("description", template.description)),
            "categories": str(overrides.get("categories", template.categories)),
            "orgid": orgid,
        }
        if any(i["issuerid"] == record["issuerid"] for i in self._issuers.values()):
            raise ValueError(f"issuerid {record['issuerid']!r} already exists")
        if "doctypes" in overrides:
            doctypes = list(self._doctype_pairs(overrides["doctypes"]))
        else:
            doctypes = self._draw_doctypes(template.pool)
        self._issuers[orgid] = record
        self._state_of[orgid] = template.state
        self._doctypes[orgid] = {}
        for code, description in doctypes:
            self.add_doctype(orgid, code, description)
        return dict(record)

    @staticmethod
    def _doctype_pairs(value: Iterable[Any]) -> Iterable[tuple[str, str]]:
        for item in value:
            if isinstance(item, dict):
                yield str(item["doctype"]), str(item["description"])
            else:
                code, description = item
                yield str(code), str(description)

    def remove_issuer(self, orgid: str) -> dict[str, str]:
        """Deregister an issuer with its doctypes and parameters. KeyError when absent."""
        record = self._issuers.pop(orgid)
        for code in self._doctypes.pop(orgid):
            del self._params[(orgid, code)]
        del self._state_of[orgid]
        return record

    def rename_issuer(self, orgid: str, name: str) -> dict[str, str]:
        record = self._issuers[orgid]
        record["name"] = name
        return dict(record)

    def add_doctype(
        self,
        orgid: str,
        doctype: str,
        description: str,
        parameters: list[dict[str, Any]] | None = None,
    ) -> dict[str, str]:
        """Add a document type to an issuer; `parameters` default to the code's kind (seeded).

        [inferred] codes are five upper-case letters or digits. KeyError for an unknown
        orgid, ValueError for a malformed or taken code.
        """
        docs = self._doctypes[orgid]
        if not _DOCTYPE_RE.fullmatch(doctype):
            raise ValueError(f"doctype {doctype!r} is not a 5-character code")
        if doctype in docs:
            raise ValueError(f"doctype {doctype!r} already exists for orgid {orgid!r}")
        docs[doctype] = description
        if parameters is None:
            parameters = self._make_parameters(doctype, self._state_of[orgid])
        self._params[(orgid, doctype)] = copy.deepcopy(parameters)
        return {"doctype": doctype, "description": description}

    def remove_doctype(self, orgid: str, doctype: str) -> dict[str, str]:
        """KeyError when absent. [inferred] an issuer may be left with no doctypes; its
        `documents` list is then empty."""
        description = self._doctypes[orgid].pop(doctype)
        del self._params[(orgid, doctype)]
        return {"doctype": doctype, "description": description}

    def set_parameters(
        self, orgid: str, doctype: str, parameters: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Replace a doctype's search parameters. KeyError when the pair is absent."""
        key = (orgid, doctype)
        if key not in self._params:
            raise KeyError(key)
        self._params[key] = copy.deepcopy(parameters)
        return copy.deepcopy(parameters)

    def accounts(self) -> list[dict[str, str]]:
        return [dict(a) for a in self._accounts.values()]

    def pushed(self, digilockerid: str | None = None) -> list[dict[str, str]]:
        """URIs pushed through `/account/1/pushuri` and not deleted."""
        return [
            dict(p)
            for p in self._pushed.values()
            if digilockerid is None or p["digilockerid"] == digilockerid
        ]

    # -- statistics ----------------------------------------------------------------------

    def _jitter(self, field: str, day_index: int) -> float:
        digest = hashlib.blake2b(
            f"{self.seed}:{field}:{day_index}".encode(), digest_size=8
        ).digest()
        return int.from_bytes(digest, "big") / 2**64

    def count_on(self, field: str, day: date) -> int:
        """A total as of the end of `day` (IST): fixed per day and never decreasing."""
        index = (day - STAT_REFERENCE_DAY).days
        rate = self._growth[field]
        value = STAT_BASE[field] + math.floor(
            rate * index + 0.5 * rate * self._jitter(field, index)
        )
        return max(value, 0)

    def _registrations(self, year: int, month: int, today: date) -> int:
        """Users registered in a month (to date for the current one)."""
        end = min(_month_end(year, month), today)
        py, pm = _months_back(year, month, 1)
        return self.count_on("users", end) - self.count_on("users", _month_end(py, pm))

    def statistics(self, at: datetime | None = None) -> dict[str, Any]:
        """What `/statistics/1/counts` answers at `at` (default: the simulator clock).

        [ext] shape; totals are digit strings, nested counts integers, as in the example.
        [inferred] `count_as_on` is today's IST date; `yearwise_authentic_documents` holds the
        cumulative count at each year's end for the last four years (oldest at the top, this
        year to date in `details2`, equal to `authentic_documents`); `monthwise_registations`
        ("last 12 months") holds the month eleven months back at the top and the current
        month to date in `details2`.
        """
        moment = at if at is not None else self.clock()
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        today = moment.astimezone(IST).date()
        body: dict[str, Any] = {
            field: str(self.count_on(field, today))
            for field in ("users", "authentic_documents", "issuers", "requestors")
        }
        body["count_as_on"] = ddmmyyyy(today)

        def month_row(back: int) -> dict[str, int]:
            year, month = _months_back(today.year, today.month, back)
            count = self._registrations(year, month, today)
            return {"id": _row_id(year, month), "year": year, "month": month, "count": count}

        body["monthwise_registations"] = {**month_row(11), "details2": month_row(0)}

        def year_row(year: int) -> dict[str, int]:
            count = self.count_on("authentic_documents", min(date(year, 12, 31), today))
            return {"id": _row_id(year), "year": year, "count": count}

        this_year = today.year
        body["yearwise_authentic_documents"] = {
            **year_row(this_year - 3),
            "details": year_row(this_year - 2),
            "details1": year_row(this_year - 1),
            "details2": year_row(this_year),
        }
        return body

    # -- control -------------------------------------------------------------------------

    def mutate(self, spec: dict[str, Any]) -> Any:
        """`POST /_sandbox/mutate` with `{"op": ..., <arguments>}`.

        Ops: add_issuer (issuer fields, `doctypes`), remove_issuer (`orgid`), rename_issuer
        (`orgid`, `name`), add_doctype (`orgid`, `doctype`, `description`, `parameters`),
        remove_doctype (`orgid`, `doctype`), set_parameters (`orgid`, `doctype`,
        `parameters`), add_account (`uid`, `mobile`).
        """
        args = dict(spec)
        op = args.pop("op", None)
        if op == "add_issuer":
            return self.add_issuer(**args)
        if op == "remove_issuer":
            return self.remove_issuer(str(args["orgid"]))
        if op == "rename_issuer":
            return self.rename_issuer(str(args["orgid"]), str(args["name"]))
        if op == "add_doctype":
            return self.add_doctype(
                str(args["orgid"]),
                str(args["doctype"]),
                str(args["description"]),
                args.get("parameters"),
            )
        if op == "remove_doctype":
            return self.remove_doctype(str(args["orgid"]), str(args["doctype"]))
        if op == "set_parameters":
            return self.set_parameters(
                str(args["orgid"]), str(args["doctype"]), list(args["parameters"])
            )
        if op == "add_account":
            return self.add_account(args.get("uid"), args.get("mobile"))
        raise ValueError(
            f"unknown op {op!r}; use add_issuer, remove_issuer, rename_issuer, add_doctype, "
            "remove_doctype, set_parameters or add_account"
        )

    def info(self) -> dict[str, Any]:
        return {
            "source": self.name,
            "seed": self.seed,
            "base_path": BASE_PATH,
            "client_id": self._client_id,
            "client_secret": self._client_secret,
            "hmac_encoding": self.hmac_encoding,
            "ts_offset_seconds": self.ts_offset_seconds,
            "max_ts_age_seconds": self.max_ts_age_seconds,
            "max_ts_future_seconds": self.max_ts_future_seconds,
            "access_token": self.access_token,
            "endpoints": {BASE_PATH + path: ctype for path, ctype in ENDPOINTS.items()},
            "issuers": len(self._issuers),
            "doctypes": len(self._params),
            "accounts": [
                {k: a[k] for k in ("digilockerid", "uid", "mobile")}
                for a in self._accounts.values()
            ],
        }

    async def _ctl_records(self, request: web.Request) -> web.Response:
        """`GET /_sandbox/records?resource=doctypes&orgid=001891` (default: issuers)."""
        query = request.query
        try:
            records = self.truth(
                query.get("resource", "issuers"),
                orgid=query.get("orgid"),
                doctype=query.get("doctype"),
            )
        except KeyError as exc:
            return self._ctl_json({"error": f"not found: {exc.args[0]}"}, 404)
        except ValueError as exc:
            return self._ctl_json({"error": str(exc)}, 400)
        return self._ctl_json({"count": len(records), "records": records})

    # -- HTTP: errors, auth and forms ----------------------------------------------------

    def error_body(self, status: int, message: str | None = None) -> bytes:
        """`{error, error_description}` for any status: [ext] 400, 401, 500; [inferred] the
        codes for the others (every 5xx reuses the documented 500 body)."""
        if status == 400:
            error, description = "invalid_parameter", MISSING_OR_INVALID
        elif status == 401:
            error, description = "invalid_client_id", "The client_id parameter is invalid"
        elif status >= 500:
            error, description = "unexpected_error", "Internal server error"
        elif status == 429:
            error, description = "too_many_requests", "Too many requests"
        else:
            phrase = reason(status)
            error, description = re.sub(r"\W+", "_", phrase.lower()).strip("_"), phrase
        return orjson.dumps({"error": error, "error_description": message or description})

    def _api_error(self, exc: ApiError) -> web.Response:
        return self.json({"error": exc.error, "error_description": exc.description}, exc.status)

    def _check_bearer(self, request: web.Request) -> None:
        if self.access_token is None:
            return
        if request.headers.get("Authorization") != f"Bearer {self.access_token}":
            # [ext] the upstream spec's 401 for a bad access token.
            raise ApiError(401, "invalid_token", "The access token is invalid")

    async def _read_form(self, request: web.Request, expected: str) -> dict[str, str]:
        """The body's fields; [inferred] the query string is ignored, a repeated field keeps
        its last value (PHP's rule), and a multipart file part counts as its text (the seed
        types `hmac` as File)."""
        ctype = request.content_type
        allowed = (expected,) if self.strict_content_type else (FORM, MULTIPART)
        if ctype not in allowed:
            raise ApiError(
                415, "invalid_content_type", f"The request Content-Type must be {expected}"
            )
        try:
            return await _form_fields(request)
        except ValueError as exc:
            # [inferred] an unreadable multipart body counts as missing parameters.
            raise _invalid(TS_TEXT) from exc

    # -- accounts ------------------------------------------------------------------------

    def assign_credentials(self, name: str) -> None:
        self._client_id = f"DL{name.upper()}"
        self._client_secret = account_secret(self.name, name, "client_secret", 40)
        if self.access_token is not None:
            self.access_token = account_secret(self.name, name, "access_token")

    async def claims(self, request: web.Request) -> bool:
        """Its bearer token (when it wants one), and forms naming its client id."""
        header = request.headers.get("Authorization")
        if self.access_token is not None and header == f"Bearer {self.access_token}":
            return True
        if request.content_type not in (FORM, MULTIPART):
            return False
        try:
            fields = await _form_fields(request)
        except ValueError:
            return False
        return fields.get("clientid") == self._client_id

    def _authenticate(self, fields: dict[str, str]) -> None:
        """[inferred] order: ts present and an integer (400), hmac present (400), clientid
        known (401), ts fresh (401), hmac right (401)."""
        ts = fields.get("ts")
        if ts is None or not _TS_RE.fullmatch(ts):
            raise _invalid(TS_TEXT)
        sent = fields.get("hmac")
        if not sent:
            raise _invalid(HMAC_TEXT)
        if fields.get("clientid") != self._client_id:
            raise ApiError(401, "invalid_client_id", "The client_id parameter is invalid")
        age = self.clock().timestamp() - (int(ts) - self.ts_offset_seconds)
        if age > self.max_ts_age_seconds or -age > self.max_ts_future_seconds:
            raise ApiError(401, "invalid_ts", "Timestamp parameter is invalid")
        expected = self.sign(ts)
        if self.hmac_encoding == "hex":
            sent = sent.lower()  # [inferred] hex digits in either case
        if not compare_digest(sent.encode(), expected.encode()):
            raise ApiError(401, "hmac_mismatch", "HMAC does not match")

    def add_routes(self, router: web.UrlDispatcher) -> None:
        actions: dict[str, Callable[[dict[str, str]], web.Response]] = {
            "/oauth2/1/pull/doctype": self._doctype,
            "/oauth2/1/pull/issuers": self._issuers_list,
            "/oauth2/1/pull/parameters": self._parameters,
            "/statistics/1/counts": self._counts,
            "/account/1/pushuri": self._pushuri,
            "/account/2/verify": self._verify,
        }
        for path, ctype in ENDPOINTS.items():
            router.add_post(BASE_PATH + path, self._endpoint(ctype, actions[path]))

    def _endpoint(self, expected: str, action: Callable[[dict[str, str]], web.Response]) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                self._check_bearer(request)
                fields = await self._read_form(request, expected)
                self._authenticate(fields)
                return action(fields)
            except ApiError as exc:
                return self._api_error(exc)

        return handle

    # -- HTTP: operations ----------------------------------------------------------------

    def _orgid(self, fields: dict[str, str]) -> str:
        orgid = fields.get("orgid")
        if not orgid or orgid not in self._issuers:
            raise _invalid(ORGID_TEXT)
        return orgid

    def _issuers_list(self, fields: dict[str, str]) -> web.Response:
        """[inferred] registration order (new issuers last)."""
        return self.json({"issuers": self.truth("issuers")})

    def _doctype(self, fields: dict[str, str]) -> web.Response:
        return self.json({"documents": self.truth("doctypes", orgid=self._orgid(fields))})

    def _parameters(self, fields: dict[str, str]) -> web.Response:
        """A bare array ([ext] `Set<SearchParametersResponseInner>`). [inferred] the doctype
        is matched exactly (codes are upper case)."""
        orgid = self._orgid(fields)
        doctype = fields.get("doctype")
        if not doctype or doctype not in self._doctypes[orgid]:
            raise _invalid(DOCTYPE_TEXT)
        return self.json(self.truth("parameters", orgid=orgid, doctype=doctype))

    def _counts(self, fields: dict[str, str]) -> web.Response:
        return self.json(self.statistics())

    def _pushuri(self, fields: dict[str, str]) -> web.Response:
        """Add (A), update (U) or delete (D) one URI in an account.

        [inferred] checks: action, uri, then for A/U docid and issuedate (DDMMYYYY),
        validfrom (7 or 8 digits) and validto when given; then the account (404, also when
        `digilockerid` is missing); then the URI's presence. The 200 body is undocumented
        ("Object"): `{"status": "success", "uri": ...}`.
        """
        action = fields.get("action")
        if action not in ("A", "U", "D"):
            raise _invalid(ACTION_TEXT)
        uri = fields.get("uri")
        if not uri:
            raise _invalid(URI_TEXT)
        record: dict[str, str] = {}
        if action != "D":
            docid = fields.get("docid")
            if not docid:
                raise _invalid(DOCID_TEXT)
            issued = _parse_ddmmyyyy(fields.get("issuedate"))
            if issued is None:
                raise _invalid(ISSUEDATE_TEXT)
            valid_from = issued
            if fields.get("validfrom"):
                parsed = _parse_ddmmyyyy(fields["validfrom"], pad=True)
                if parsed is None:
                    raise _invalid(VALIDFROM_TEXT)
                valid_from = parsed
            valid_to = ""
            if fields.get("validto"):
                until = _parse_ddmmyyyy(fields["validto"])
                if until is None:
                    raise _invalid(VALIDTO_TEXT)
                valid_to = ddmmyyyy(until)
            record = {
                "uri": uri,
                "docid": docid,
                "issuedate": ddmmyyyy(issued),
                "validfrom": ddmmyyyy(valid_from),
                "validto": valid_to,
            }
        digilockerid = fields.get("digilockerid")
        if not digilockerid or digilockerid not in self._accounts:
            raise ApiError(404, "invalid_digilocker_id", "The digilockerid parameter is invalid")
        existing = self._pushed.get(uri)
        if action == "A":
            if existing is not None:
                here = existing["digilockerid"] == digilockerid
                raise _invalid(URI_EXISTS_HERE if here else URI_EXISTS_ELSEWHERE)
            self._pushed[uri] = {"digilockerid": digilockerid, **record}
        else:
            if existing is None or existing["digilockerid"] != digilockerid:
                raise _invalid(URI_TEXT)
            if action == "U":
                self._pushed[uri] = {"digilockerid": digilockerid, **record}
            else:
                del self._pushed[uri]
        return self.json({"status": "success", "uri": uri})

    def _verify(self, fields: dict[str, str]) -> web.Response:
        """[ext] `{"registered": "true"|"false", "digilockerid": ...}` (strings).
        [inferred] a uid is 12 digits and a mobile 10; the uid is looked up first, then the
        mobile; an unregistered number answers `digilockerid: ""` (the field is required upstream)."""
        uid = fields.get("uid") or None
        mobile = fields.get("mobile") or None
        if uid is None and mobile is None:
            raise _invalid(UID_OR_MOBILE_TEXT)
        if uid is not None and not re.fullmatch(r"\d{12}", uid):
            raise _invalid(UID_TEXT)
        if mobile is not None and not re.fullmatch(r"\d{10}", mobile):
            raise _invalid(MOBILE_TEXT)
        found: dict[str, str] | None = None
        for account in self._accounts.values():
            if uid is not None and account["uid"] == uid:
                found = account
                break
        if found is None and mobile is not None:
            found = next((a for a in self._accounts.values() if a["mobile"] == mobile), None)
        if found is None:
            return self.json({"registered": "false", "digilockerid": ""})
        return self.json({"registered": "true", "digilockerid": found["digilockerid"]})


def _demo_changes(sim: DigiLockerSimulator, rng: random.Random) -> str:
    sim.add_issuer()
    return "1 new DigiLocker issuer"


SANDBOX = SandboxSource(
    name="digilocker",
    make=lambda seed, sizes: DigiLockerSimulator(issuers=20, seed=seed),
    credentials=lambda sim: {"client_id": sim.client_id, "client_secret": sim.client_secret},
    api_path=BASE_PATH,
    port=8705,
    demo_changes=_demo_changes,
    small=lambda seed: DigiLockerSimulator(issuers=6, seed=seed),
    streams={
        "issuers": SandboxStream(
            records=lambda sim: sim.truth("issuers"),
            removal=Removal({"op": "remove_issuer", "orgid": "{orgid}"}),
        ),
        "doctypes": SandboxStream(
            records=lambda sim: sim.truth("doctypes"),
            removal=Removal({"op": "remove_doctype", "orgid": "{orgid}", "doctype": "{doctype}"}),
            derived_key="a doctype code is unique only within its issuer: orgid/doctype, the "
            "orgid being the partition the list was read for (SOURCES.md §5.3)",
        ),
        "statistics": SandboxStream(
            records=lambda sim: sim.truth("statistics"),
            removal=Removal(
                None,
                marked_by=None,
                why="one row per day read, kept as history (Deletions.NEVER); there is nothing "
                "to remove",
            ),
            derived_key="the counts object has no identity of its own: one row per (UTC) day "
            "it was read, keyed by that date",
        ),
    },
    # Every list is a single response. No `record`: the bad-record cases break a record's key
    # `id` and its cursor timestamp, and issuers (a snapshot keyed by `orgid`) have no cursor.
    faults=FaultTarget(
        stream="issuers",
        make=lambda seed: DigiLockerSimulator(issuers=9, seed=seed),
        list_path=f"{BASE_PATH}/oauth2/1/pull/issuers",
        page_size=None,
    ),
)

__all__ = ["SANDBOX", "DigiLockerSimulator", "compute_hmac"]
