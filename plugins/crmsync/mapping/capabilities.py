"""What the Chargebee API lets a client write, per resource.

The mapping validator uses this table to reject a mapping that asks the sync to write a
field Chargebee cannot write (the flow would otherwise drop that edit silently), and
the Chargebee writer uses it to route each changed field to the endpoint that accepts
it (a customer's ``billing_address`` only changes through ``update_billing_info``).

It also says which endpoints *assign* (:class:`Assignment`): an assigning endpoint
removes every attribute it covers that a call does not send, so the writer must re-send
the current value of each covered field the mapping does not own (a sync write never
changes a field the mapping does not own). Checked against the official SDK's
``operations.py`` and Chargebee's API reference, route by route:

* ``POST /customers/{id}/update_billing_info`` assigns: "This operation works like an
  assignment [...] If you omit an argument, Chargebee deletes that attribute from the
  customer object" (apidocs.chargebee.com, *Update billing info for a customer*). It
  covers every param of the SDK's ``UpdateBillingInfoParams``: all of
  ``billing_address[*]`` and the VAT/tax fields. ``entity_identifiers`` is not covered:
  each of its entries carries its own ``operation`` (create/update/delete), so entries
  not sent stay.
* ``POST /orders/{id}`` with ``shipping_address[*]``: the reference does not say whether
  a partial address is merged or replaces the stored one. Where the docs are silent the
  stricter reading holds (DESIGN.md section 5): the whole address is treated as assigned
  whenever one of its lines is sent. Its other params change only what is sent.
* ``POST /customers/{id}``, ``POST /items/{id}``, ``POST /item_families`` (create) and
  ``POST /orders`` (create): change only the params sent (documented per param; a create
  has nothing to remove). ``meta_data``/``metadata`` is one JSON value: sent only when
  the mapping owns it, then whole.
* Customcrm (``sandbox/customcrm/openapi.yaml``): ``PATCH`` changes only the fields sent
  (JSON merge, one level); see :class:`~crmsync.flows.writers.CustomcrmWriter` for a CRM
  configured with ``update_method: PUT``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

#: Sub-fields of a Chargebee address param (the SDK's ``...BillingAddressParams`` and
#: ``...ShippingAddressParams``: the same fourteen).
ADDRESS_PARAMS: tuple[str, ...] = (
    "first_name",
    "last_name",
    "email",
    "company",
    "phone",
    "line1",
    "line2",
    "line3",
    "city",
    "state_code",
    "state",
    "zip",
    "country",
    "validation_status",
)


@dataclass(frozen=True)
class Assignment:
    """An endpoint that removes the attributes it covers when a call does not send them.

    ``fields`` are top-level params covered by every call; ``objects`` are object params
    (``billing_address``) whose sub-fields are covered by every call (``always``) or only
    by a call that sends one of them (the object is then replaced whole).
    """

    route: str
    fields: tuple[str, ...] = ()
    objects: dict[str, tuple[str, ...]] = field(default_factory=dict)
    always: bool = True
    #: where the behaviour is stated (or why it is assumed), for the reader and the report
    source: str = ""

    def applies(self, paths: Iterable[str]) -> bool:
        """Whether a call sending ``paths`` (dotted) removes anything it does not send."""
        if self.always:
            return True
        return any(p.split(".", 1)[0] in self.objects for p in paths)

    def covered(self, paths: Iterable[str]) -> list[str]:
        """Every dotted path a call sending ``paths`` assigns (sent or not)."""
        sent = [p.split(".", 1)[0] for p in paths]
        out = list(self.fields)
        for obj, subs in self.objects.items():
            if self.always or obj in sent:
                out += [f"{obj}.{sub}" for sub in subs]
        return out


#: ``chargebee.create`` of a mapping whose Chargebee site still has legacy order
#: management (the only sites where ``POST /orders`` creates an order).
LEGACY_ORDER_MANAGEMENT = "legacy_order_management"


@dataclass(frozen=True)
class ChargebeeResource:
    """A Chargebee resource that exists, and how its list/retrieve behaves.

    The one registry of Chargebee resources (:data:`RESOURCES`): the hook reads paths,
    object keys and list filters from it, and :data:`CAPABILITIES` (what can be written)
    names only resources listed here.

    :param name: plural path segment (``customers``).
    :param object_key: the key wrapping each object in responses (``customer``).
    :param updated_field: the timestamp the incremental filter and sort use.
    :param include_deleted: whether the list accepts ``include_deleted``.
    :param deleted_statuses: for a list without ``include_deleted`` whose ``status`` filter
        takes ``deleted`` (items: ``Item.ListParams`` has no ``include_deleted``, an item's
        status is active, archived or deleted): every status, sent as
        ``status[in]=["active", "archived", "deleted"]`` when deleted records are wanted.
    :param sortable: whether the list accepts ``sort_by[asc]=<updated_field>``.
    :param readable: whether Chargebee documents a list and retrieve for it. Business
        entities have none (the official SDK has only ``create_transfers`` and
        ``get_transfers``): they are known from events, customers and transfers
        (:mod:`crmsync.hooks.chargebee_events`), and reading them directly is refused
        here, so nothing can come to depend on an endpoint a real site may answer 404.
    """

    name: str
    object_key: str
    updated_field: str = "updated_at"
    include_deleted: bool = True
    deleted_statuses: tuple[str, ...] = ()
    sortable: bool = True
    readable: bool = True


RESOURCES: dict[str, ChargebeeResource] = {
    r.name: r
    for r in (
        ChargebeeResource("customers", "customer"),
        # Item.ListParams: no include_deleted; status[in] lists deleted items too
        ChargebeeResource(
            "items", "item", include_deleted=False, deleted_statuses=("active", "archived", "deleted")
        ),
        ChargebeeResource("item_families", "item_family"),
        ChargebeeResource("item_prices", "item_price"),
        ChargebeeResource("orders", "order"),
        ChargebeeResource("invoices", "invoice"),
        ChargebeeResource("business_entities", "business_entity", readable=False),
        # GET /business_entities/transfers: declares limit, offset and filters, no include_deleted;
        # its sort_by is left at Chargebee's default
        ChargebeeResource(
            "business_entities/transfers",
            "business_entity_transfer",
            updated_field="created_at",
            include_deleted=False,
            sortable=False,
        ),
        ChargebeeResource("events", "event", updated_field="occurred_at", include_deleted=False),
    )
}


@dataclass(frozen=True)
class ResourceCapability:
    """The writes Chargebee's public API offers for one resource."""

    resource: str
    can_create: bool
    can_update: bool
    can_delete: bool
    #: top-level field (or prefix of a dotted path) → the endpoint that writes it on
    #: update: ``"update"`` for ``POST /{resource}/{id}``, else an action name.
    update_routes: dict[str, str] = field(default_factory=dict)
    #: fields a create must carry (besides ``id``).
    create_requires: tuple[str, ...] = ()
    #: the action that deletes (``POST /{resource}/{id}/{delete_action}``).
    delete_action: str = "delete"
    #: why writes are limited, said to the user in validation errors and run summaries.
    limitation: str | None = None
    #: top-level fields a create accepts (None: any); the rest is set by an update after it.
    create_params: frozenset[str] | None = None
    #: update routes that assign (remove what they cover and are not sent), by route name.
    assignments: dict[str, Assignment] = field(default_factory=dict)
    #: A site setting the create needs, or None when every site offers it. Orders: the
    #: manual create (``POST /orders``) is legacy order management's; sites with current
    #: order management (every site since 2021-10-01) refuse it and generate orders from
    #: invoices, so a mapping creates orders only when it says the site is legacy.
    create_needs: str | None = None

    @property
    def object_key(self) -> str:
        """The key wrapping this resource's object in responses (from :data:`RESOURCES`)."""
        return RESOURCES[self.resource].object_key

    def update_route(self, path: str) -> str | None:
        """The endpoint that writes ``path`` on an existing record, or None if none does."""
        top = path.split(".", 1)[0]
        return self.update_routes.get(top)

    def can_write(self, path: str) -> bool:
        return self.can_update and self.update_route(path) is not None

    def assignment(self, route: str, paths: Iterable[str]) -> Assignment | None:
        """The assignment a call of ``route`` sending ``paths`` makes, or None if that call
        changes only what it sends."""
        found = self.assignments.get(route)
        return found if found is not None and found.applies(paths) else None


#: ``update_billing_info`` covers every param of the SDK's ``UpdateBillingInfoParams``
#: except ``entity_identifiers`` (per-entry operations); a unit test keeps it equal to the SDK.
BILLING_INFO = Assignment(
    route="update_billing_info",
    fields=(
        "vat_number",
        "vat_number_prefix",
        "entity_identifier_scheme",
        "entity_identifier_standard",
        "registered_for_gst",
        "business_customer_without_vat_number",
        "is_einvoice_enabled",
        "einvoicing_method",
        "tax_providers_fields",
    ),
    objects={"billing_address": ADDRESS_PARAMS},
    always=True,
    source="apidocs.chargebee.com: update_billing_info 'works like an assignment'",
)
ORDER_SHIPPING_ADDRESS = Assignment(
    route="update",
    objects={"shipping_address": ADDRESS_PARAMS},
    always=False,
    source="not documented either way for POST /orders/{id}: the stricter reading (replaced when sent)",
)


CAPABILITIES: dict[str, ResourceCapability] = {
    "customers": ResourceCapability(
        resource="customers",
        can_create=True,
        can_update=True,
        can_delete=True,
        update_routes={
            **dict.fromkeys(
                (
                    "first_name",
                    "last_name",
                    "email",
                    "phone",
                    "company",
                    "meta_data",
                    "locale",
                    "net_term_days",
                    "preferred_currency_code",
                ),
                "update",
            ),
            "billing_address": "update_billing_info",
        },
        assignments={"update_billing_info": BILLING_INFO},
    ),
    "items": ResourceCapability(
        resource="items",
        can_create=True,
        can_update=True,
        can_delete=True,
        create_requires=("name", "type", "item_family_id"),
        update_routes=dict.fromkeys(
            (
                "name",
                "external_name",
                "description",
                "unit",
                "is_shippable",
                "metadata",
                "status",
                "item_family_id",
                "enabled_for_checkout",
                "enabled_in_portal",
                "redirect_url",
                "included_in_mrr",
            ),
            "update",
        ),
        limitation="an item's `type` and `id` are fixed once created; archive it through `status`",
        create_params=frozenset(
            {
                "id",
                "name",
                "type",
                "item_family_id",
                "description",
                "is_shippable",
                "external_name",
                "unit",
                "metadata",
                "enabled_in_portal",
                "enabled_for_checkout",
                "redirect_url",
                "item_applicability",
                "included_in_mrr",
                "is_giftable",
                "metered",
                "usage_calculation",
            }
        ),
    ),
    "item_families": ResourceCapability(
        resource="item_families",
        can_create=True,
        can_update=True,
        can_delete=True,
        update_routes=dict.fromkeys(("name", "description"), "update"),
    ),
    "orders": ResourceCapability(
        resource="orders",
        can_create=True,
        can_update=True,
        can_delete=False,
        create_requires=("invoice_id",),
        update_routes={
            **dict.fromkeys(
                (
                    "status",
                    "reference_id",
                    "fulfillment_status",
                    "note",
                    "tracking_id",
                    "tracking_url",
                    "batch_id",
                    "shipping_date",
                    "order_date",
                    "cancelled_at",
                    "cancellation_reason",
                    "shipped_at",
                    "delivered_at",
                    "shipment_carrier",
                ),
                "update",
            ),
            "shipping_address": "update",
        },
        assignments={"update": ORDER_SHIPPING_ADDRESS},
        delete_action="cancel",
        create_params=frozenset(
            {
                "id",
                "invoice_id",
                "status",
                "reference_id",
                "fulfillment_status",
                "note",
                "tracking_id",
                "tracking_url",
                "batch_id",
            }
        ),
        create_needs=LEGACY_ORDER_MANAGEMENT,
        limitation=(
            "Chargebee generates orders from invoices; `POST /orders` (with an `invoice_id`) is the "
            "create of legacy order management, refused by sites with current order management "
            "(every site since 2021-10-01); "
            "the customer, amounts, number and `created_by` of an order cannot be changed; "
            "only imported orders can be deleted, so a delete is sent as a cancel"
        ),
    ),
    "business_entities": ResourceCapability(
        resource="business_entities",
        can_create=False,
        can_update=False,
        can_delete=False,
        limitation=(
            "Chargebee's public API has no create, update, list or retrieve for business "
            "entities (only /business_entities/transfers); they are read from the "
            "business_entity_* events (a full read: the whole event history, then the ids "
            "customers and transfers name; an id no event names is reported, not synced)"
        ),
    ),
}


def capability(resource: str) -> ResourceCapability:
    """Look up a resource, with an error that lists the supported ones."""
    try:
        return CAPABILITIES[resource]
    except KeyError:
        known = ", ".join(sorted(CAPABILITIES))
        raise KeyError(f"Chargebee resource {resource!r} is not supported (supported: {known})") from None
