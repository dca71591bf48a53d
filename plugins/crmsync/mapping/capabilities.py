"""What the Chargebee API lets a client write, per resource.

The mapping validator uses this table to reject a mapping that asks the sync to write a
field Chargebee cannot write (the flow would otherwise drop that edit silently), and
the Chargebee writer uses it to route each changed field to the endpoint that accepts
it (a customer's ``billing_address`` only changes through ``update_billing_info``).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ResourceCapability:
    """The writes Chargebee's public API offers for one resource."""

    resource: str
    object_key: str
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

    def update_route(self, path: str) -> str | None:
        """The endpoint that writes ``path`` on an existing record, or None if none does."""
        top = path.split(".", 1)[0]
        return self.update_routes.get(top)

    def can_write(self, path: str) -> bool:
        return self.can_update and self.update_route(path) is not None


CAPABILITIES: dict[str, ResourceCapability] = {
    "customers": ResourceCapability(
        resource="customers",
        object_key="customer",
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
    ),
    "items": ResourceCapability(
        resource="items",
        object_key="item",
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
        object_key="item_family",
        can_create=True,
        can_update=True,
        can_delete=True,
        update_routes=dict.fromkeys(("name", "description"), "update"),
    ),
    "orders": ResourceCapability(
        resource="orders",
        object_key="order",
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
        limitation=(
            "Chargebee makes orders from paid invoices: `POST /orders` needs an `invoice_id`; "
            "the customer, amounts, number and `created_by` of an order cannot be changed; "
            "only imported orders can be deleted, so a delete is sent as a cancel"
        ),
    ),
    "business_entities": ResourceCapability(
        resource="business_entities",
        object_key="business_entity",
        can_create=False,
        can_update=False,
        can_delete=False,
        limitation=(
            "Chargebee's public API has no create or update for business entities "
            "(only /business_entities/transfers); their changes are read from the "
            "business_entity_* events, a full read lists the undocumented GET /business_entities"
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
