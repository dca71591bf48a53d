"""Resource and field definitions of the Customcrm contract, and body validation.

This module is the server-side mirror of ``openapi.yaml``: one ``ResourceSpec`` per
collection with its PascalCase fields, types, limits and list filters. It is pure (no
I/O, no state) so the validation rules can be tested in isolation and the OpenAPI test
can compare the document with what the server really enforces.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

FieldKind = Literal[
    "string", "text", "email", "boolean", "integer", "enum", "object", "ref", "date", "datetime", "currency"
]

#: Longest value of an ordinary string field; the contract's generic limit.
MAX_STRING = 255
#: Longest value of free-text fields (descriptions, notes).
MAX_TEXT = 4000

# Deliberately simple: one "@", a dot in the domain, no whitespace. Real CRMs rarely do
# more, and this already rejects the classic typo "maria.lopez@@example".
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_CURRENCY_RE = re.compile(r"^[A-Z]{3}$")


@dataclass(frozen=True)
class FieldSpec:
    """One writable field of a resource."""

    name: str
    kind: FieldKind = "string"
    nullable: bool = True
    required: bool = False  # must be present (and non-empty) on create
    choices: tuple[str, ...] = ()
    ref: str | None = None  # resource a "ref" field points to
    default: Any = None
    description: str = ""

    @property
    def max_length(self) -> int | None:
        """Length limit for string-like kinds, None for the others."""
        if self.kind == "text":
            return MAX_TEXT
        if self.kind in ("string", "email", "ref"):
            return MAX_STRING
        return None


@dataclass(frozen=True)
class FilterSpec:
    """A list query parameter that filters on one field."""

    param: str
    field: str
    case_insensitive: bool = False


@dataclass(frozen=True)
class ResourceSpec:
    """A collection served at ``/<name>``."""

    name: str  # plural path segment, e.g. "contacts"
    singular: str  # schema name, e.g. "Contact"
    prefix: str  # Id prefix, e.g. "CON" -> "CON-000123"
    fields: tuple[FieldSpec, ...]
    filters: tuple[FilterSpec, ...] = ()
    unique: tuple[str, ...] = ()  # fields unique among live (non-deleted) records, case-insensitive
    default_from_id: tuple[str, ...] = ()  # fields that default to the record's Id when omitted
    by_name: dict[str, FieldSpec] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.by_name.update({f.name: f for f in self.fields})
        self.by_name.update({f.name: f for f in COMMON_WRITABLE})

    @property
    def field_names(self) -> list[str]:
        """Resource-specific field names in document order."""
        return [f.name for f in self.fields]


#: Server-managed fields present on every record; clients cannot write them.
READ_ONLY = ("Id", "Version", "CreatedAt", "UpdatedAt", "Deleted")
#: Writable fields present on every record.
COMMON_WRITABLE = (
    FieldSpec(
        "ExternalRef",
        description="Id of the linked record in the other system (set by the sync for crash recovery).",
    ),
)


def _s(name: str, **kw: Any) -> FieldSpec:
    return FieldSpec(name, "string", **kw)


_ADDRESS = (_s("StreetAddress1"), _s("StreetAddress2"), _s("City"))

ORDER_STATUSES = (
    "new",
    "processing",
    "complete",
    "cancelled",
    "voided",
    "queued",
    "awaiting_shipment",
    "on_hold",
    "delivered",
    "shipped",
    "partially_delivered",
    "returned",
)
QUOTE_STATUSES = ("draft", "sent", "accepted", "declined", "expired")

_EXTREF = FilterSpec("external_ref", "ExternalRef")
_EMAIL = FilterSpec("email", "Email", case_insensitive=True)

RESOURCES: dict[str, ResourceSpec] = {
    r.name: r
    for r in (
        ResourceSpec(
            "contacts",
            "Contact",
            "CON",
            (
                _s("FirstName"),
                _s("LastName"),
                FieldSpec("Email", "email"),
                _s("Phone"),
                _s("Company"),
                FieldSpec("CustomerId", "ref", ref="customers", description="Company the contact works for."),
                *_ADDRESS,
                _s("State"),
                _s("ZipCode"),
                _s("Country", description="ISO 3166-1 alpha-2 code by convention (not enforced)."),
                # Fields no flow maps: a sync write must leave them as they are.
                _s("Title", description="Job title."),
                FieldSpec("Notes", "text"),
            ),
            filters=(_EMAIL, _EXTREF),
        ),
        ResourceSpec(
            "customers",
            "Customer",
            "CUS",
            (
                _s("Name", nullable=False, required=True),
                *_ADDRESS,
                _s("ZipCode"),
                _s("Country", description="ISO 3166-1 alpha-2 code by convention (not enforced)."),
                _s("Website"),
                _s("Phone"),
                FieldSpec("Email", "email"),
                _s("Fax"),
                FieldSpec("Description", "text"),
                _s("EntityIdentifier", description="Legal registration number of the company."),
            ),
            filters=(FilterSpec("name", "Name", case_insensitive=True), _EMAIL, _EXTREF),
        ),
        ResourceSpec(
            "users",
            "User",
            "USR",
            (
                FieldSpec("Email", "email", nullable=False, required=True),
                _s("FirstName"),
                _s("LastName"),
                FieldSpec("Active", "boolean", nullable=False, default=True),
            ),
            filters=(_EMAIL, _EXTREF),
            unique=("Email",),
        ),
        ResourceSpec(
            "products",
            "Product",
            "PRD",
            (
                _s("Sku", nullable=False, required=True),
                _s("Name", nullable=False, required=True),
                _s("ExternalName"),
                FieldSpec("Description", "text"),
                FieldSpec("Kind", "enum", nullable=False, required=True, choices=("plan", "addon", "charge")),
                _s("Unit"),
                FieldSpec("Shippable", "boolean", nullable=False, default=False),
                FieldSpec("Archived", "boolean", nullable=False, default=False),
                FieldSpec("Metadata", "object", nullable=False, default={}),
                FieldSpec("Notes", "text", description="Internal notes; no flow maps it."),
            ),
            filters=(FilterSpec("sku", "Sku", case_insensitive=True), _EXTREF),
            unique=("Sku",),
        ),
        ResourceSpec(
            "quotes",
            "Quote",
            "QUO",
            (
                _s("Number", nullable=False, description="Defaults to the Id when omitted."),
                FieldSpec("ContactId", "ref", ref="contacts"),
                FieldSpec("CustomerId", "ref", ref="customers"),
                FieldSpec("OwnerUserId", "ref", ref="users"),
                FieldSpec("Status", "enum", nullable=False, choices=QUOTE_STATUSES, default="draft"),
                FieldSpec("Notes", "text"),
                FieldSpec("ValidUntil", "date"),
                _s("InvoiceId", description="Chargebee invoice the accepted quote was billed on."),
                _s("OrderNumber", description="Document number of the resulting order."),
                FieldSpec("Amount", "integer", description="Minor currency units (cents)."),
                FieldSpec("Currency", "currency"),
            ),
            filters=(FilterSpec("number", "Number", case_insensitive=True), _EXTREF),
            unique=("Number",),
            default_from_id=("Number",),
        ),
        ResourceSpec(
            "orders",
            "Order",
            "ORD",
            (
                _s("Number", nullable=False, description="Defaults to the Id when omitted."),
                FieldSpec("ContactId", "ref", ref="contacts"),
                FieldSpec("CustomerId", "ref", ref="customers"),
                FieldSpec("OwnerUserId", "ref", ref="users"),
                FieldSpec("Status", "enum", nullable=False, choices=ORDER_STATUSES, default="new"),
                _s("FulfillmentStatus"),
                _s("TrackingId"),
                _s("TrackingUrl"),
                _s("Carrier"),
                FieldSpec("Note", "text"),
                FieldSpec("OrderDate", "date"),
                FieldSpec("ShippedAt", "datetime"),
                FieldSpec("DeliveredAt", "datetime"),
                _s("ShippingStreetAddress1"),
                _s("ShippingStreetAddress2"),
                _s("ShippingCity"),
                _s("ShippingZipCode"),
                _s("ShippingCountry"),
                _s("ReferenceId"),
                _s("InvoiceId"),
                FieldSpec("Total", "integer", description="Minor currency units (cents)."),
                FieldSpec("Currency", "currency"),
            ),
            filters=(FilterSpec("number", "Number", case_insensitive=True), _EXTREF),
            unique=("Number",),
            default_from_id=("Number",),
        ),
    )
}

#: Query parameters every list endpoint accepts besides its filters.
LIST_PARAMS = ("updated_since", "cursor", "limit", "include_deleted")

FieldError = tuple[str, str]  # (field, message)


def _check_value(spec: FieldSpec, value: Any, ref_exists: Callable[[str, str], str | None]) -> str | None:
    """Return an error message for ``value`` or None when it is acceptable."""
    if value is None:
        return None if spec.nullable else "must not be null"
    kind = spec.kind
    if kind in ("string", "text", "email", "ref", "date", "datetime", "currency", "enum"):
        if not isinstance(value, str):
            return f"must be a string, got {type(value).__name__}"
        limit = spec.max_length
        if limit is not None and len(value) > limit:
            return f"must be at most {limit} characters, got {len(value)}"
        if value == "" and kind not in ("string", "text", "email"):
            return None if spec.nullable else "must not be empty"
        if value.strip() == "" and not spec.nullable:
            return "must not be empty"
        if kind == "email" and value.strip() and not _EMAIL_RE.match(value.strip()):
            return "is not a valid email address"
        if kind == "enum" and value not in spec.choices:
            return f"must be one of {', '.join(spec.choices)}"
        if kind == "currency" and not _CURRENCY_RE.match(value):
            return "must be a three-letter ISO 4217 code in upper case"
        if kind == "date":
            try:
                date.fromisoformat(value)
            except ValueError:
                return "must be a date (YYYY-MM-DD)"
        if kind == "datetime":
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                return "must be an ISO-8601 date-time"
            if parsed.tzinfo is None:
                return "must carry a UTC offset (e.g. Z)"
        if kind == "ref" and spec.ref is not None:
            problem = ref_exists(spec.ref, value)
            if problem:
                return problem
        return None
    if kind == "boolean":
        return None if isinstance(value, bool) else f"must be a boolean, got {type(value).__name__}"
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be an integer, got {type(value).__name__}"
        return None
    if kind == "object":
        return None if isinstance(value, dict) else f"must be an object, got {type(value).__name__}"
    raise AssertionError(f"unknown field kind {kind}")


def validate_body(
    resource: ResourceSpec,
    body: Mapping[str, Any],
    *,
    creating: bool,
    ref_exists: Callable[[str, str], str | None],
) -> list[FieldError]:
    """Validate a POST (``creating``) or PATCH body; return every problem found.

    All problems are reported at once so a client (or a person reading a quarantine
    reason) can fix a record in one go. ``ref_exists(resource, id)`` returns an error
    message when a reference does not name a live record.
    """
    errors: list[FieldError] = []
    for name, value in body.items():
        if name in READ_ONLY:
            errors.append((name, "is read-only"))
            continue
        spec = resource.by_name.get(name)
        if spec is None:
            errors.append((name, "unknown field"))
            continue
        message = _check_value(spec, value, ref_exists)
        if message:
            errors.append((name, message))
    if creating:
        for spec in resource.fields:
            missing = body.get(spec.name) is None or str(body.get(spec.name)).strip() == ""
            if spec.required and missing and not any(f == spec.name for f, _ in errors):
                errors.append((spec.name, "is required"))
    return errors


def blank_record(resource: ResourceSpec) -> dict[str, Any]:
    """A record with every field at its default, in document order (meta fields added by the store)."""
    record: dict[str, Any] = {}
    for spec in resource.fields:
        default = spec.default
        record[spec.name] = dict(default) if isinstance(default, dict) else default
    record["ExternalRef"] = None
    return record
