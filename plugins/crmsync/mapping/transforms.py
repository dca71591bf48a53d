"""Pure field transforms: a raw value from either side → its canonical form.

Both sides' values go through the same transform before they are compared, so
``" Ada@Example.COM "`` and ``"ada@example.com"`` are the same email and not an edit.
Empty strings become ``None``: "blank" has one spelling in the canonical record.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

Canonical = str | int | float | bool | None

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
#: ISO 4217 codes of the currencies in circulation (what Chargebee and Customcrm accept)
_CURRENCY_CODES = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP BYN "
    "BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS "
    "GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW "
    "KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD "
    "NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD "
    "SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VES "
    "VND VUV WST XAF XCD XOF XPF YER ZAR ZMW ZWL "
)
CURRENCIES = frozenset(_CURRENCY_CODES.split())


#: Prefix of a canonical value that is not text where text is expected (a dict, a list):
#: validation reports it instead of syncing the Python repr of the object.
WRONG_TYPE = "\x00type:"


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool | dict | list | tuple | set):
        return f"{WRONG_TYPE}{type(value).__name__}"
    s = unicodedata.normalize("NFC", str(value)).strip()
    return s or None


def strip(value: Any) -> Canonical:
    return _text(value)


def lower(value: Any) -> Canonical:
    s = _text(value)
    return s.lower() if s else None


def upper(value: Any) -> Canonical:
    s = _text(value)
    return s.upper() if s else None


def email(value: Any) -> Canonical:
    """Emails compare case-insensitively; Chargebee and most CRMs store them lowercase."""
    return lower(value)


def country(value: Any) -> Canonical:
    """ISO 3166-1 alpha-2 codes, as Chargebee's billing address expects."""
    return upper(value)


def date(value: Any) -> Canonical:
    """Calendar dates as ``YYYY-MM-DD``: Chargebee sends Unix seconds, Customcrm ISO strings."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC).date().isoformat()
    s = str(value).strip()
    return s[:10] or None


def timestamp(value: Any) -> Canonical:
    """Instants as ISO-8601 UTC to the second: Chargebee sends Unix seconds."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        moment = datetime.fromtimestamp(value, UTC)
    else:
        try:
            moment = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            return str(value)  # kept as text: the API reports it
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(microsecond=0).isoformat()


def json_text(value: Any) -> Canonical:
    """Objects (metadata) compared as sorted JSON text; ``{}`` counts as blank."""
    if value is None or value == "" or value == {}:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return str(value)
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def integer(value: Any) -> Canonical:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and not value.is_integer():
        return str(value)  # 12.5, NaN, inf: never cut to a whole number; validation reports it
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return str(value)  # kept as text: validation reports it


def boolean(value: Any) -> Canonical:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def identity(value: Any) -> Canonical:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


TRANSFORMS: dict[str, Callable[[Any], Canonical]] = {
    "strip": strip,
    "lower": lower,
    "upper": upper,
    "email": email,
    "country": country,
    "none": identity,
    "date": date,
    "int": integer,
    "bool": boolean,
    "datetime": timestamp,
    "json": json_text,
}


def _date_to_unix(value: Canonical) -> Any:
    if value is None:
        return None
    return int(datetime.fromisoformat(str(value)).replace(tzinfo=UTC).timestamp())


def _instant_to_unix(value: Canonical) -> Any:
    if value is None:
        return None
    return int(datetime.fromisoformat(str(value)).timestamp())


def _json_out(value: Canonical) -> Any:
    return None if value is None else json.loads(str(value))


def check_json_object(value: Canonical) -> str | None:
    """Why a ``json`` field's canonical value is not a JSON object, or None.

    :func:`json_text` keeps text that does not parse as it was read (and a list or a
    number as its JSON), so the record is reported here instead of crashing the write
    that decodes it; both sides' metadata are JSON objects.
    """
    if value is None:
        return None
    try:
        parsed = json.loads(str(value))
    except ValueError:
        return f'{short(value)} is not valid JSON; it must be a JSON object such as {{"tier": "gold"}}'
    if not isinstance(parsed, dict):
        return f'{short(value)} is not a JSON object such as {{"tier": "gold"}}'
    return None


def short(value: Canonical, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


#: How a canonical value is written to Chargebee when its form differs there.
CHARGEBEE_OUT: dict[str, Callable[[Canonical], Any]] = {
    "date": _date_to_unix,
    "datetime": _instant_to_unix,
    "json": _json_out,
}
#: ... and to Customcrm.
CUSTOMCRM_OUT: dict[str, Callable[[Canonical], Any]] = {"json": _json_out}


def check_format(fmt: str | None, value: Canonical) -> str | None:
    """Why ``value`` breaks ``fmt``, or None when it is fine (blank is fine)."""
    if fmt is None or value is None:
        return None
    s = str(value)
    if fmt == "email" and not _EMAIL.match(s):
        return f"{s!r} is not a valid email address"
    if fmt == "country_code" and not _COUNTRY.match(s):
        return f"{s!r} is not a two-letter ISO country code (e.g. NO, DE, US)"
    if fmt == "currency_code" and s not in CURRENCIES:
        return f"{s!r} is not an ISO 4217 currency code (e.g. EUR, NOK, USD)"
    return None


def check_transform(transform: str, value: Canonical) -> str | None:
    """Why ``value`` is not in the form its transform promises (a date that is no date, a
    number that is no whole number), or None. Such a value is kept as read so that it is
    reported here, with the record, instead of failing the write that converts it."""
    if value is None:
        return None
    if transform == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        return f"{value!r} is not a whole number (amounts are in minor units, e.g. cents)"
    if transform == "date":
        try:
            datetime.strptime(str(value), "%Y-%m-%d")
        except ValueError:
            return f"{value!r} is not a date (YYYY-MM-DD)"
    if transform == "datetime":
        try:
            datetime.fromisoformat(str(value))
        except ValueError:
            return f"{value!r} is not a date and time (ISO 8601, e.g. 2025-03-01T12:00:00Z)"
    return None


def has_control_chars(value: Canonical) -> bool:
    """Control characters (other than tab/newline) are rejected by both APIs."""
    return isinstance(value, str) and any(
        unicodedata.category(ch) == "Cc" and ch not in "\t\n\r" for ch in value
    )
