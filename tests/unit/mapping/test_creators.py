"""The one rule for "created_by names no person" (issue 12): a person is an email
address; ``system``, ``import`` and any API key name are no person; the Chargebee
connection's ``api_key_names`` adds key names that look like email addresses. Both
user_order (``no_partner``) and order_order (``ref_absent_when``) ask this rule."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from crmsync.engine.canonical import SideRecord, to_canonical
from crmsync.engine.plan import Action, decide_new
from crmsync.mapping.creators import (
    api_key_name_problem,
    names_no_person,
    normalize_api_key_names,
    normalize_creator,
)
from crmsync.mapping.model import Mapping, MappingError, Side, load_mapping, parse_mapping
from crmsync.mapping.transforms import check_format
from hypothesis import example, given
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[3]
USER_ORDER = ROOT / "include/mappings/user_order.yaml"
ORDER_ORDER = ROOT / "include/mappings/order_order.yaml"

#: text as an admin may name an API key: printable, no @ (Chargebee's docs: free text)
key_text = st.text(
    st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="@"), min_size=1, max_size=60
).filter(lambda s: s.strip())
#: email addresses of every shape the product accepts as one (local@domain.tld)
email_part = st.text(
    st.characters(
        blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp"), blacklist_characters="@\t\n\r\x0b\x0c"
    ),
    min_size=1,
    max_size=20,
).filter(lambda s: not any(c.isspace() for c in s))
emails = st.builds(lambda a, b, c: f"{a}@{b}.{c}", email_part, email_part, email_part)


# -- the rule ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "created_by",
    [
        "system",
        "import",
        "full_access_key_v1",
        "Airflow Sync (prod)",
        "billing-bot (prod)",
        " SYSTEM ",
        "api",
    ],
)
def test_chargebee_and_api_keys_are_no_person(created_by: str) -> None:
    assert names_no_person(created_by)


@pytest.mark.parametrize(
    "created_by",
    [
        "ada@example.com",
        " Ada@Example.COM ",
        "billing@acme.example",  # an API key named like an email: a person unless listed
        "ada@@example.com",  # an attempt at an email: user_order holds it as no valid email
        "a da@example.com",
    ],
)
def test_an_at_sign_is_a_person(created_by: str) -> None:
    assert not names_no_person(created_by)


@pytest.mark.parametrize(
    "created_by", [None, "", "   ", "\u3000", 42, True, ["system"], {"a": 1}, "sys\x00tem", "a\tb"]
)
def test_blank_no_text_or_control_characters_are_neither_and_left_to_the_reader(created_by: Any) -> None:
    """user_order holds these with their reason; order_order waits for an owner."""
    assert not names_no_person(created_by)
    assert not names_no_person(created_by, normalize_api_key_names(["system"]))


def test_listed_names_are_compared_as_emails_are() -> None:
    listed = normalize_api_key_names([" Billing@ACME.example ", "bot@acme.example"])
    assert listed == {"billing@acme.example", "bot@acme.example"}
    for v in ("billing@acme.example", "BILLING@acme.example  ", "bot@acme.example"):
        assert names_no_person(v, listed)
    assert not names_no_person("ada@acme.example", listed)


@given(email=emails)
@example(email="billing@acme.example")
def test_every_email_is_a_person_unless_listed(email: str) -> None:
    assert check_format("email", normalize_creator(email)) is None  # the product calls it an email
    assert not names_no_person(email)
    assert names_no_person(email, normalize_api_key_names([email]))
    assert names_no_person(f" {email} ", normalize_api_key_names([email]))
    if email.upper().lower() == email.lower():  # case-insensitive, as emails compare
        assert names_no_person(email.upper(), normalize_api_key_names([email]))
    assert not names_no_person(email, normalize_api_key_names(["other@acme.example"]))


@given(name=key_text, listed=st.lists(emails, max_size=3))
@example(name="full_access_key_v1", listed=[])
@example(name="Airflow Sync (prod)", listed=[])
def test_every_text_that_is_no_email_is_no_person(name: str, listed: list[str]) -> None:
    assert check_format("email", normalize_creator(name)) is not None  # no email address
    assert names_no_person(name, normalize_api_key_names(listed))


@given(value=st.one_of(st.none(), st.text(), st.integers(), st.booleans()), listed=st.lists(st.text()))
def test_the_rule_never_fails_and_a_listed_value_is_always_no_person(value: Any, listed: list[str]) -> None:
    names = normalize_api_key_names(x for x in listed if api_key_name_problem(x) is None)
    result = names_no_person(value, names)
    if normalize_creator(value) in names:
        assert result


@pytest.mark.parametrize(
    ("name", "problem"),
    [("", "blank"), ("  ", "blank"), ("bot\x00", "control"), (3, "no text"), ("ok@acme.example", None)],
)
def test_api_key_name_problems(name: Any, problem: str | None) -> None:
    found = api_key_name_problem(name)
    assert (found is None) if problem is None else (problem in str(found))


# -- the mappings ask the rule ------------------------------------------------------------


def doc(path: Path) -> dict[str, Any]:
    return dict(yaml.safe_load(path.read_text()))


def test_no_partner_names_the_creator_match_key_on_the_chargebee_side() -> None:
    d = doc(USER_ORDER)
    assert parse_mapping(copy.deepcopy(d)).chargebee.no_partner == "created_by"
    wrong = copy.deepcopy(d)
    wrong["chargebee"]["no_partner"] = "customer_id"
    with pytest.raises(
        MappingError, match=r"chargebee\.no_partner 'customer_id' must be the Chargebee path of a match key"
    ):
        parse_mapping(wrong)
    crm = copy.deepcopy(d)
    crm["customcrm"]["no_partner"] = "Email"
    with pytest.raises(MappingError, match=r"customcrm\.no_partner applies only to the Chargebee side"):
        parse_mapping(crm)


def test_ref_absent_when_takes_only_the_shared_rule() -> None:
    d = doc(ORDER_ORDER)
    owner = next(f for f in d["fields"] if f["name"] == "owner_id")
    owner["ref_absent_when"] = {"chargebee": "created_by"}
    with pytest.raises(MappingError, match=r"ref_absent_when\.no_person"):
        parse_mapping(d)
    owner["ref_absent_when"] = {"chargebee": "created_by", "no_person": False}
    with pytest.raises(MappingError, match=r"ref_absent_when\.no_person"):
        parse_mapping(d)


def test_api_key_names_come_from_the_connection_never_from_the_mapping_file() -> None:
    d = doc(USER_ORDER)
    d["api_key_names"] = ["billing@acme.example"]
    with pytest.raises(MappingError, match="api_key_names"):
        parse_mapping(d)
    m = load_mapping(USER_ORDER)
    assert m.api_key_names == frozenset() and m.reads_creators
    named = m.with_api_key_names([" Billing@Acme.example"])
    assert named.api_key_names == {"billing@acme.example"} and m.api_key_names == frozenset()
    assert named.flow == m.flow and named.fields == m.fields
    assert not load_mapping(ROOT / "include/mappings/contact_customer.yaml").reads_creators


# -- the engine: user_order skips, order_order has no owner -------------------------------------


def _order(m: Mapping, created_by: Any) -> SideRecord:
    return SideRecord(
        Side.CHARGEBEE, "ord_1", to_canonical(m, Side.CHARGEBEE, {"id": "ord_1", "created_by": created_by})
    )


@pytest.mark.parametrize("created_by", ["full_access_key_v1", "Airflow Sync (prod)", "system", "import"])
def test_user_order_skips_orders_no_person_made(created_by: str) -> None:
    m = load_mapping(USER_ORDER)
    d = decide_new(m, _order(m, created_by))
    assert d.action is Action.SKIP and "names no Customcrm user by design" in (d.reason or ""), d


def test_user_order_skips_a_listed_email_like_key_name_and_holds_it_unlisted() -> None:
    m = load_mapping(USER_ORDER)
    listed = m.with_api_key_names(["billing@acme.example"])
    d = decide_new(listed, _order(listed, "Billing@acme.example"))
    assert d.action is Action.SKIP and "names no Customcrm user" in (d.reason or ""), d
    # unlisted, it is a person's email that no user has: not linked, not "no person"
    d = decide_new(m, _order(m, "billing@acme.example"))
    assert "names no Customcrm user by design" not in (d.reason or ""), d


@pytest.mark.parametrize("created_by", [None, "", "   "])
def test_user_order_still_holds_a_blank_created_by(created_by: Any) -> None:
    m = load_mapping(USER_ORDER).with_api_key_names(["billing@acme.example"])
    d = decide_new(m, _order(m, created_by))
    assert d.action is Action.QUARANTINE and "created_by" in (d.reason or ""), d


def test_order_order_owner_is_absent_exactly_when_no_person_made_the_order() -> None:
    m = load_mapping(ORDER_ORDER)
    listed = m.with_api_key_names(["billing@acme.example"])

    def owner_read(mapping: Mapping, created_by: str) -> bool:
        raw = {"id": "ord_1", "created_by": created_by, "customer_id": "cust_1"}
        return "owner_id" in to_canonical(mapping, Side.CHARGEBEE, raw)

    for v in ("full_access_key_v1", "Airflow Sync (prod)", "system", "import"):
        assert not owner_read(m, v) and not owner_read(listed, v)
    assert owner_read(m, "billing@acme.example") and not owner_read(listed, "billing@acme.example")
    assert owner_read(m, "ada@acme.example") and owner_read(listed, "ada@acme.example")
