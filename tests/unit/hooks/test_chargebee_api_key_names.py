"""The Chargebee connection's ``api_key_names`` (issue 12): API key names that look like
email addresses, so that orders they made name no person. Validated with an error that
names the connection and the field; read by the tasks into the mapping they hand the
engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from crmsync.hooks._http import ConnectionConfigError, validate_settings
from crmsync.hooks.chargebee import ChargebeeHook, ChargebeeSettings
from crmsync.mapping.model import load_mapping

ROOT = Path(__file__).resolve().parents[3]
KEY = "test_key_abc"


def settings(extra: dict[str, Any]) -> ChargebeeSettings:
    return validate_settings(ChargebeeSettings, extra, conn_id="chargebee_test")


@pytest.mark.parametrize(
    ("given", "names"),
    [
        ({}, ()),
        ({"api_key_names": ""}, ()),  # an untouched form field
        ({"api_key_names": []}, ()),
        (
            {"api_key_names": ["billing@acme.example", " bot@acme.example "]},
            ("billing@acme.example", "bot@acme.example"),
        ),
        ({"api_key_names": "billing@acme.example"}, ("billing@acme.example",)),  # the form's text field
        (
            {"api_key_names": '["a@acme.example", "Airflow Sync (prod)"]'},
            ("a@acme.example", "Airflow Sync (prod)"),
        ),
    ],
)
def test_api_key_names_shapes(given: dict[str, Any], names: tuple[str, ...]) -> None:
    assert settings(given).api_key_names == names


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (["ok@acme.example", ""], "entry 2: a blank entry names no API key"),
        (["bot\x00@acme.example"], "entry 1: an API key name holds no control characters"),
        ([3], "entry 1: int is no text"),
        ({"a": "b"}, "must be a list of API key names"),
        ('["unterminated', "no JSON list"),
    ],
)
def test_a_bad_entry_names_the_connection_and_the_field(value: Any, says: str) -> None:
    with pytest.raises(ConnectionConfigError) as info:
        settings({"api_key_names": value})
    text = str(info.value)
    assert "connection 'chargebee_test'" in text and "api_key_names" in text and says in text, text


def test_the_hook_reads_them_from_the_connection(make_conn: Any) -> None:
    conn_id = make_conn(
        "chargebee", host="acme-test", password=KEY, extra={"api_key_names": ["billing@acme.example"]}
    )
    hook = ChargebeeHook(conn_id)
    assert isinstance(hook.settings, ChargebeeSettings)
    assert hook.settings.api_key_names == ("billing@acme.example",)


def test_the_tasks_hand_the_engine_a_mapping_that_knows_them(
    make_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crmsync.flows import tasks

    conn_id = make_conn(
        "chargebee", host="acme-test", password=KEY, extra={"api_key_names": [" Billing@Acme.example"]}
    )
    m = load_mapping(ROOT / "include/mappings/user_order.yaml")
    m = m.model_copy(update={"connections": m.connections.model_copy(update={"chargebee": conn_id})})
    assert tasks._with_connection_rules(m).api_key_names == {"billing@acme.example"}
    # a flow that asks nobody's creator does not read the connection at all
    other = load_mapping(ROOT / "include/mappings/contact_customer.yaml")
    other = other.model_copy(
        update={"connections": other.connections.model_copy(update={"chargebee": "absent"})}
    )
    assert tasks._with_connection_rules(other) is other


def test_a_bad_connection_fails_the_task_without_retries(make_conn: Any) -> None:
    from airflow.sdk.exceptions import AirflowFailException
    from crmsync.flows import tasks

    conn_id = make_conn("chargebee", host="acme-test", password=KEY, extra={"api_key_names": [""]})
    m = load_mapping(ROOT / "include/mappings/order_order.yaml")
    m = m.model_copy(update={"connections": m.connections.model_copy(update={"chargebee": conn_id})})
    with pytest.raises(AirflowFailException, match=f"connection '{conn_id}'.*api_key_names"):
        tasks._with_connection_rules(m)
