"""The mapping file of one flow, validated by pydantic when the DAG file is parsed.

A bad mapping must fail at parse time with a message that names the file, the field
and the fix, so that it shows as an import error in the Airflow UI instead of a task
that writes garbage at 3 a.m.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from crmsync.mapping.capabilities import ResourceCapability, capability
from crmsync.mapping.creators import names_no_person, normalize_api_key_names
from crmsync.mapping.transforms import TRANSFORMS

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


#: Why the creator regexes of older mappings were replaced (their migration errors say it).
_ONE_CREATOR_RULE = (
    "who names no person (system, import, any API key name, the Chargebee connection's "
    "api_key_names) is one rule the product shares"
)


class MappingError(ValueError):
    """A mapping file that cannot be used, with every problem listed."""


class Side(StrEnum):
    CUSTOMCRM = "customcrm"
    CHARGEBEE = "chargebee"

    @property
    def other(self) -> Side:
        return Side.CHARGEBEE if self is Side.CUSTOMCRM else Side.CUSTOMCRM


class Direction(StrEnum):
    BOTH = "both"
    TO_CHARGEBEE = "to_chargebee"
    TO_CUSTOMCRM = "to_customcrm"

    def writes(self, side: Side) -> bool:
        """Whether values flow *into* ``side``."""
        if self is Direction.BOTH:
            return True
        return (self is Direction.TO_CHARGEBEE) == (side is Side.CHARGEBEE)


class ConflictPolicy(StrEnum):
    NEWEST_WINS = "newest_wins"
    CUSTOMCRM_WINS = "customcrm_wins"
    CHARGEBEE_WINS = "chargebee_wins"


class DeletePolicy(StrEnum):
    PROPAGATE = "propagate"  # delete the linked record on the other side
    UNLINK = "unlink"  # forget the link, leave the other side alone
    RESTORE = "restore"  # re-create the deleted record from the other side
    #: hold the delete for a person's decision (quarantine kind ``approval``, keyed by the
    #: deleted record): nothing is written and the link stays until someone approves
    #: (the next run deletes the partner, as ``propagate``) or rejects (the next run
    #: ends the link, as ``unlink``) in the Sync page or with ``crmsync.store.approvals``
    APPROVE = "approve"


class ReadOnlyEdits(StrEnum):
    """What to do with an edit on the side that is not a source for a one-way field."""

    RESTORE = "restore"  # write the source side's value back over the edit
    KEEP = "keep"  # keep the edit, report it in every run's summary


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RefAbsent(_Strict):
    """When a Chargebee record has, by design, no record to refer to in a ``ref`` field.

    ``{chargebee: created_by, no_person: true}``: when the record's ``created_by`` names
    no person (``system``, ``import`` or an API key's name), by the rule every flow shares
    (:mod:`crmsync.mapping.creators`, with the Chargebee connection's ``api_key_names``).
    """

    #: Path of the Chargebee value that tells (an order's ``created_by``).
    chargebee: str
    #: The value names no person (see :mod:`crmsync.mapping.creators`).
    no_person: Literal[True]

    @model_validator(mode="before")
    @classmethod
    def _migrated(cls, data: Any) -> Any:
        if isinstance(data, dict) and "matches" in data:
            raise ValueError(
                "ref_absent_when.matches (a regular expression) was replaced by `no_person: true`: "
                f"{_ONE_CREATOR_RULE}; write `ref_absent_when: {{chargebee: created_by, no_person: true}}`"
            )
        return data

    def applies(self, value: Any, api_key_names: frozenset[str] = frozenset()) -> bool:
        """Whether the Chargebee value at :attr:`chargebee` says there is no reference
        (``api_key_names``: the Chargebee connection's, normalized)."""
        return names_no_person(value, api_key_names)


class FieldMap(_Strict):
    """One canonical field and where it lives on each side."""

    name: str
    customcrm: str
    chargebee: str
    transform: str = "strip"
    direction: Direction = Direction.BOTH
    #: What a blank does to the other side. Unset (the default): a clear is an edit, so a
    #: field whose synced value was non-empty and that one side cleared is cleared on the
    #: other side too (a blank that was never synced never overwrites). ``false``: a blank
    #: never overwrites (the other side keeps its value; the blank is reported in the run
    #: summary), for a field where an empty value means "not filled in here" rather than
    #: "removed". ``true``: a blank overwrites like any value, also where it wins a conflict
    #: or restores a one-way field.
    empty_overwrites: bool | None = None
    required: bool = False
    max_length: Annotated[int, Field(gt=0)] | None = None
    format: str | None = None  # email | country_code | currency_code
    #: Customcrm value → canonical (Chargebee's vocabulary), e.g. {true: archived, false: active}.
    values: dict[str, str] | None = None
    #: The value is the id of a record of another flow (e.g. an order's customer): it is
    #: compared as the Customcrm id and translated through that flow's links on write.
    ref: str | None = None
    #: A record whose ref is not linked yet waits (True) or syncs without this field (False).
    ref_required: bool = True
    #: A Chargebee record with no partner in the referenced flow by design (an order no
    #: person created has no owner user) syncs without this field and does not wait or
    #: report ``ref_pending`` run after run for a link that can never exist.
    ref_absent_when: RefAbsent | None = None
    #: What a person can do when this reference does not resolve by itself (an order's
    #: owner is the Customcrm user its ``created_by`` names: if there is none, no run will
    #: ever link one). Said in the hold's reason instead of "retried next run"; a
    #: ``{path}`` placeholder is filled with that value of the Chargebee record
    #: (``{created_by}``), so the reason names who is missing.
    ref_missing_fix: str | None = None
    #: Overrides the flow's ``read_only_edits`` for this one-way field.
    read_only_edits: ReadOnlyEdits | None = None
    #: A ``to_customcrm`` field that a Chargebee *create* still carries: Chargebee fixes
    #: some values when a record is made and takes no update for them (a customer's
    #: ``business_entity_id``), so the create is the one chance to set them from Customcrm.
    on_create: bool = False
    #: What a person can do about a bad value read from Chargebee when Chargebee's API
    #: cannot change the field (an order's ``created_by``): replaces "fix it in Chargebee"
    #: in the reason, so the hold says something that can actually be done.
    chargebee_fix: str | None = None

    @field_validator("ref_missing_fix")
    @classmethod
    def _ref_missing_fix(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                hint_paths(v)
            except ValueError as e:
                raise ValueError(
                    f"ref_missing_fix is no valid template ({e}); use {{path}} placeholders"
                ) from e
        return v

    @property
    def hint_paths(self) -> list[str]:
        """The Chargebee paths a reason of this field names (``{created_by}``)."""
        return hint_paths(self.ref_missing_fix) if self.ref_missing_fix else []

    @field_validator("values", mode="before")
    @classmethod
    def _values(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {_value_key(k): str(val) for k, val in v.items()}
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"field name {v!r} must be snake_case (letters, digits, underscores)")
        return v

    @field_validator("transform")
    @classmethod
    def _transform(cls, v: str) -> str:
        if v not in TRANSFORMS:
            raise ValueError(f"unknown transform {v!r}; use one of: {', '.join(sorted(TRANSFORMS))}")
        return v

    @field_validator("format")
    @classmethod
    def _format(cls, v: str | None) -> str | None:
        if v is not None and v not in ("email", "country_code", "currency_code"):
            raise ValueError(f"unknown format {v!r}; use 'email', 'country_code' or 'currency_code'")
        return v


def hint_paths(template: str) -> list[str]:
    """The ``{path}`` placeholders of a reason template, in order, each once."""
    import string

    out: list[str] = []
    for _, name, spec, conv in string.Formatter().parse(template):
        if name is None:
            continue
        if not name or spec or conv or not re.fullmatch(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*", name):
            raise ValueError(f"{{{name}}} is not a Chargebee attribute path")
        if name not in out:
            out.append(name)
    return out


def _value_key(raw: Any) -> str:
    """Keys of a value map as strings: YAML turns ``true:`` into a bool."""
    if isinstance(raw, bool):
        return "true" if raw else "false"
    return str(raw)


class SideSpec(_Strict):
    resource: str
    label: str
    #: Whether the sync may create records on this side. When False, an unmatched
    #: record of the other side is skipped with ``create_disabled_reason``.
    create: bool = True
    create_disabled_reason: str | None = None
    #: With ``create`` off, an unmatched record of the other side waits (held for a
    #: person, checked again by every run) instead of being skipped: for records whose
    #: partner this side makes by itself (Chargebee generates an order from its invoice),
    #: so that the hold says what to do and the pair links once the partner appears.
    create_disabled_waits: bool = False
    #: The Chargebee path of the match key that names a record's creator
    #: (``created_by``): a record whose creator is no person by design (``system``,
    #: ``import``, an API key's name: see :mod:`crmsync.mapping.creators`) has no record
    #: of the other side (no user made the order) and is skipped with that reason, not
    #: held as a broken key; any other key that is blank or malformed is held. Chargebee
    #: side only.
    no_partner: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _migrated(cls, data: Any) -> Any:
        if isinstance(data, dict) and "no_partner_keys" in data:
            raise ValueError(
                "no_partner_keys (a regular expression) was replaced by `no_partner: created_by`: "
                f"{_ONE_CREATOR_RULE}; name the match key's Chargebee path"
            )
        return data


class EnsureSpec(_Strict):
    """A parent record a create needs (e.g. an item family), created once if missing."""

    resource: str
    id: str
    params: dict[str, Any] = Field(default_factory=dict)


class ChargebeeSpec(SideSpec):
    #: ``true``/``false`` as on any side, or ``legacy_order_management`` for orders: the
    #: create Chargebee offers for orders (``POST /orders``) works only on sites that
    #: still have legacy order management, and every site since 2021-10-01 refuses it
    #: (orders are generated from invoices). A mapping that creates orders says so
    #: explicitly, so that ``true`` cannot send creates a current site refuses.
    create: bool | Literal["legacy_order_management"] = True  # type: ignore[assignment]
    #: Template of the id given to records the sync creates in Chargebee ({crm_id}, or
    #: {field} for a canonical field, e.g. "{sku}").
    create_id: str | None = None
    #: Canonical fields a create needs; a record without them waits with the reason.
    create_requires: list[str] = Field(default_factory=list)
    create_requires_reason: str | None = None
    #: Static parameters every create carries (e.g. item_family_id).
    create_defaults: dict[str, Any] = Field(default_factory=dict)
    ensure: EnsureSpec | None = None
    #: Read changes through ``GET /events`` (these event types, by ``occurred_at``)
    #: instead of listing the resource by ``updated_at``: for resources whose list cannot
    #: be filtered by ``updated_at`` in Chargebee's public API (business entities). The
    #: first run and ``full_resync`` still list the resource; an event type ending in
    #: ``_deleted`` marks its record deleted.
    change_events: list[str] = Field(default_factory=list)
    #: Event types that say a record of the resource was deleted (``customer_deleted``),
    #: read through ``GET /events`` since the watermark next to the list: where Chargebee
    #: purges a deleted record (customers, "permanently deleted after a few minutes") the
    #: list never shows it deleted, and the event is the signal. Each must be
    #: ``<object>_deleted`` for the mapping's resource.
    delete_events: list[str] = Field(default_factory=list)

    @field_validator("change_events")
    @classmethod
    def _change_events(cls, v: list[str]) -> list[str]:
        bad = [e for e in v if not _NAME.match(e)]
        if bad:
            raise ValueError(
                f"change_events must be Chargebee event types such as 'business_entity_updated' (bad: {bad})"
            )
        return v

    @field_validator("delete_events")
    @classmethod
    def _delete_events(cls, v: list[str], info: ValidationInfo) -> list[str]:
        resource = str(info.data.get("resource") or "")
        obj = resource[:-3] + "y" if resource.endswith("ies") else resource.removesuffix("s")
        bad = [e for e in v if not _NAME.match(e) or e != f"{obj}_deleted"]
        if bad:
            raise ValueError(
                f"delete_events must be the Chargebee event that deletes a {obj or 'record'} "
                f"('{obj}_deleted'), not {bad}"
            )
        return v

    @field_validator("create_id")
    @classmethod
    def _create_id(cls, v: str | None) -> str | None:
        if v is not None and "{" not in v:
            raise ValueError(
                "create_id must contain a placeholder such as '{crm_id}' so that ids are deterministic"
            )
        return v


class MatchSpec(_Strict):
    """How unlinked records find their partner before anything is created.

    ``keys`` is the first rule (all its fields must be equal). ``alternatives`` are
    further rules tried in order for records the earlier rules found no partner for,
    e.g. a quote links to the order whose ``reference_id`` names it, else to the order
    made from the invoice the quote names. A pair found by a later rule is not linked
    when an earlier rule's key is set on both sides and differs (a contradiction is
    held as ambiguous, never guessed).
    """

    keys: list[str] = Field(min_length=1)
    alternatives: list[Annotated[list[str], Field(min_length=1)]] = Field(default_factory=list)
    #: compare keys case- and whitespace-insensitively
    normalize: bool = True

    @property
    def rules(self) -> list[list[str]]:
        """Every rule in the order it is tried: ``keys`` first, then the alternatives."""
        return [list(self.keys), *(list(a) for a in self.alternatives)]


class ConflictSpec(_Strict):
    policy: ConflictPolicy = ConflictPolicy.NEWEST_WINS
    tie_breaker: Side = Side.CUSTOMCRM


class DeleteSpec(_Strict):
    on_customcrm_delete: DeletePolicy = DeletePolicy.UNLINK
    on_chargebee_delete: DeletePolicy = DeletePolicy.UNLINK

    def policy_for(self, deleted_on: Side) -> DeletePolicy:
        return self.on_customcrm_delete if deleted_on is Side.CUSTOMCRM else self.on_chargebee_delete


class LimitSpec(_Strict):
    max_writes_per_run: Annotated[int, Field(gt=0)] = 2000
    max_write_fraction: Annotated[float, Field(gt=0, le=1)] = 0.5
    error_budget: Annotated[int, Field(ge=0)] = 10


class ConnectionSpec(_Strict):
    """Airflow connection ids the flow uses (defaults suit a single Chargebee site)."""

    customcrm: str = "customcrm_default"
    chargebee: str = "chargebee_default"
    store: str = "crmsync_store"


class RunSpec(_Strict):
    """How the tasks read and write."""

    #: re-read a window this long before the watermark: list endpoints can miss the
    #: latest changes, and clocks drift.
    overlap_seconds: Annotated[int, Field(ge=0)] = 300
    #: a Chargebee record whose extract is older than this is re-read before it is
    #: written, to narrow the window for a lost update (Chargebee has no If-Match).
    reread_after_seconds: Annotated[int, Field(ge=0)] = 300
    #: concurrent writes per upsert task (the shared rate budget still applies).
    max_workers: Annotated[int, Field(ge=1, le=32)] = 4


class Cardinality(StrEnum):
    ONE_TO_ONE = "one_to_one"
    #: one Customcrm record ⇄ many Chargebee records (a user and the orders they created)
    ONE_TO_MANY = "one_to_many"


class Mapping(_Strict):
    """A whole flow: both sides, the field pairs and the policies."""

    flow: str
    description: str = ""
    schedule: str | None = "@hourly"
    tags: list[str] = Field(default_factory=list)
    customcrm: SideSpec
    chargebee: ChargebeeSpec
    fields: list[FieldMap] = Field(min_length=1)
    match: MatchSpec
    conflict: ConflictSpec = ConflictSpec()
    delete: DeleteSpec = DeleteSpec()
    limits: LimitSpec = LimitSpec()
    connections: ConnectionSpec = ConnectionSpec()
    run: RunSpec = RunSpec()
    cardinality: Cardinality = Cardinality.ONE_TO_ONE
    read_only_edits: ReadOnlyEdits = ReadOnlyEdits.RESTORE
    #: Said in the DAG doc and the summary: what this flow cannot do because of the API.
    limitations: list[str] = Field(default_factory=list)
    #: The Chargebee connection's ``api_key_names`` (normalized), put on a copy of the
    #: mapping by the task that knows the connection (:meth:`with_api_key_names`); never
    #: read from the mapping file. Empty: only the rule's defaults apply.
    _api_key_names: frozenset[str] = PrivateAttr(default_factory=frozenset)

    @field_validator("flow")
    @classmethod
    def _flow(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"flow {v!r} must be snake_case; it becomes the DAG id")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Mapping:
        """Every rule that needs more than one part of the file (or Chargebee's API, from
        :mod:`crmsync.mapping.capabilities`), all broken ones in one error."""
        names = [f.name for f in self.fields]
        problems = self._match_problems(names)
        try:
            cap = capability(self.chargebee.resource)
        except KeyError as exc:
            problems.append(str(exc.args[0]))
        else:
            problems += self._create_problems(cap, names)
            problems += self._side_problems(cap, names)
            for f in self.fields:
                problems += _field_problems(f, cap)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _match_problems(self, names: list[str]) -> list[str]:
        problems: list[str] = []
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            problems.append(f"field names appear twice: {', '.join(dupes)}")
        for n, rule in enumerate(self.match.rules):
            where = "match key" if n == 0 else f"match alternative {n}"
            for key in rule:
                if key not in names:
                    problems.append(f"{where} {key!r} is not one of the fields ({', '.join(names)})")
        if self.match.alternatives and self.cardinality is Cardinality.ONE_TO_MANY:
            problems.append(
                "match.alternatives is not supported for cardinality one_to_many; use one match rule"
            )
        return problems

    def _create_problems(self, cap: ResourceCapability, names: list[str]) -> list[str]:
        """What the file asks of creating Chargebee records that Chargebee's API refuses."""
        problems: list[str] = []
        if self.chargebee.create and not cap.can_create:
            problems.append(
                f"chargebee.create is true, but Chargebee cannot create {cap.object_key} records "
                f"({cap.limitation or 'no create endpoint'}); set chargebee.create: false"
            )
        elif self.chargebee.create is True and cap.create_needs is not None:
            problems.append(
                f"chargebee.create is true, but Chargebee creates {cap.object_key} records only on "
                f"sites with {cap.create_needs.replace('_', ' ')} ({cap.limitation}); set "
                f"chargebee.create: false, or chargebee.create: {cap.create_needs} if your site has it"
            )
        elif isinstance(self.chargebee.create, str) and cap.create_needs != self.chargebee.create:
            problems.append(
                f"chargebee.create: {self.chargebee.create} applies only to Chargebee orders; "
                "use true or false"
            )
        if self.chargebee.create_id is not None:
            import string

            holes = {h for _, h, _, _ in string.Formatter().parse(self.chargebee.create_id) if h}
            bad = sorted(holes - {"crm_id", *names})
            if bad or not holes:
                problems.append(
                    f"chargebee.create_id {self.chargebee.create_id!r} must use only {{crm_id}} or field "
                    f"names as placeholders (unknown: {', '.join(bad) or 'none given'})"
                )
        for key in self.chargebee.create_requires:
            if key not in names:
                problems.append(f"chargebee.create_requires names {key!r}, which is not one of the fields")
        return problems

    def _side_problems(self, cap: ResourceCapability, names: list[str]) -> list[str]:
        """Delete policies and the creator rule (``no_partner``) each side allows."""
        problems: list[str] = []
        deletes = (DeletePolicy.PROPAGATE, DeletePolicy.APPROVE)
        if self.delete.on_customcrm_delete in deletes and not cap.can_delete:
            problems.append(
                f"delete.on_customcrm_delete: {self.delete.on_customcrm_delete.value} would delete "
                f"Chargebee {cap.object_key} records, and Chargebee's API has no delete for them; "
                "use unlink"
            )
        if self.customcrm.no_partner is not None:
            problems.append(
                "customcrm.no_partner applies only to the Chargebee side (a Chargebee record's "
                "created_by); remove it"
            )
        if self.chargebee.no_partner is not None:
            key_paths = {self.fields[names.index(k)].chargebee for k in self.match.keys if k in names}
            if self.chargebee.no_partner not in key_paths:
                problems.append(
                    f"chargebee.no_partner {self.chargebee.no_partner!r} must be the Chargebee path "
                    f"of a match key ({', '.join(sorted(key_paths)) or 'none'}): the key that "
                    "names the record's creator"
                )
        return problems

    # -- derived views, used by the engine -------------------------------------------

    @property
    def api_key_names(self) -> frozenset[str]:
        """The Chargebee connection's ``api_key_names``, normalized (see :meth:`with_api_key_names`)."""
        return self._api_key_names

    def with_api_key_names(self, names: Iterable[str]) -> Mapping:
        """A copy of this mapping that knows the Chargebee connection's ``api_key_names``
        (created_by values that name no person: :mod:`crmsync.mapping.creators`)."""
        copy = self.model_copy()
        copy._api_key_names = normalize_api_key_names(names)
        return copy

    @property
    def reads_creators(self) -> bool:
        """Whether the flow asks who created a Chargebee record (``no_partner`` or a
        field's ``ref_absent_when``), so it needs the connection's ``api_key_names``."""
        return self.chargebee.no_partner is not None or any(f.ref_absent_when for f in self.fields)

    @property
    def refs(self) -> list[FieldMap]:
        return [f for f in self.fields if f.ref]

    @property
    def depends_on(self) -> list[str]:
        return sorted({f.ref for f in self.fields if f.ref and f.ref != self.flow})

    def field(self, name: str) -> FieldMap:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def side(self, side: Side) -> SideSpec:
        return self.customcrm if side is Side.CUSTOMCRM else self.chargebee

    def source_path(self, f: FieldMap, side: Side) -> str:
        return f.customcrm if side is Side.CUSTOMCRM else f.chargebee


def _field_problems(f: FieldMap, cap: ResourceCapability) -> list[str]:
    """What one field pair asks that its options or Chargebee's API do not allow."""
    problems: list[str] = []
    if f.ref_missing_fix is not None and not f.ref:
        problems.append(f"field {f.name!r} has ref_missing_fix, which only applies to a field with `ref:`")
    if f.ref_absent_when is not None and not f.ref:
        problems.append(f"field {f.name!r} has ref_absent_when, which only applies to a field with `ref:`")
    if f.on_create and f.direction is not Direction.TO_CUSTOMCRM:
        problems.append(
            f"field {f.name!r} has on_create: true, which only applies to a field with "
            "`direction: to_customcrm` (a field that flows to Chargebee is sent on create anyway)"
        )
    top = f.chargebee.split(".", 1)[0]
    if f.on_create and cap.create_params is not None and top not in cap.create_params:
        problems.append(
            f"field {f.name!r} has on_create: true, but creating a Chargebee {cap.object_key} "
            f"does not accept {f.chargebee}; remove on_create"
        )
    if f.direction.writes(Side.CHARGEBEE) and not cap.can_write(f.chargebee):
        why = cap.limitation or "Chargebee's API has no endpoint that updates it"
        problems.append(
            f"field {f.name!r} asks to write Chargebee {cap.object_key}.{f.chargebee}, "
            f"which Chargebee cannot write ({why}); set `direction: to_customcrm`"
        )
    return problems


def parse_mapping(data: Any, *, source: str = "<mapping>") -> Mapping:
    """Validate a mapping document, turning pydantic's errors into one readable message."""
    try:
        return Mapping.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"  - {where}: {msg}")
        raise MappingError(f"invalid mapping file {source}:\n" + "\n".join(lines)) from None


def load_mapping(path: str | Path) -> Mapping:
    """Read and validate one mapping YAML file."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise MappingError(f"invalid mapping file {p}: not valid YAML ({exc})") from None
    return parse_mapping(data, source=str(p))


def load_mappings(folder: str | Path) -> list[Mapping]:
    """Every ``*.yaml`` mapping in ``folder``, sorted by flow name; flows must be unique."""
    mappings = [load_mapping(p) for p in sorted(Path(folder).glob("*.yaml"))]
    flows = [m.flow for m in mappings]
    dupes = sorted({f for f in flows if flows.count(f) > 1})
    if dupes:
        raise MappingError(f"flows defined twice in {folder}: {', '.join(dupes)}")
    return mappings
