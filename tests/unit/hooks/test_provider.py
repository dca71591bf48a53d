"""Provider info: Airflow registers both connection types with their form metadata."""

from __future__ import annotations

import json
from importlib.metadata import entry_points
from pathlib import Path

import jsonschema
import pytest
from crmsync.hooks.chargebee import ChargebeeHook
from crmsync.hooks.customcrm import CustomcrmHook
from crmsync.provider import get_provider_info


def test_entry_point_resolves_to_get_provider_info() -> None:
    (ep,) = [
        e
        for e in entry_points(group="apache_airflow_provider")
        if e.dist and e.dist.name == "airflow-crmsync"
    ]
    assert ep.load() is get_provider_info


def test_provider_info_is_valid_for_airflow() -> None:
    import airflow

    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    info = get_provider_info()
    jsonschema.validate(info, schema)
    assert info["package-name"] == "airflow-crmsync"
    assert info["db-managers"] == ["crmsync.store.db_manager.LinkStoreDBManager"]


@pytest.mark.parametrize("hook", [ChargebeeHook, CustomcrmHook])
def test_connection_types_match_the_hooks(hook: type) -> None:
    (entry,) = [c for c in get_provider_info()["connection-types"] if c["connection-type"] == hook.conn_type]
    assert entry["hook-class-name"] == f"{hook.__module__}.{hook.__name__}"
    assert entry["hook-name"] == hook.hook_name
    behaviour = hook.get_ui_field_behaviour()
    assert entry["ui-field-behaviour"]["relabeling"] == behaviour["relabeling"]
    assert entry["ui-field-behaviour"]["hidden-fields"] == behaviour["hidden_fields"]


def test_providers_manager_registers_hooks_and_widgets() -> None:
    from airflow.providers_manager import ProvidersManager
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    hooks = ProvidersManagerTaskRuntime().hooks  # what Connection.get_hook() uses in a task
    for conn_type, cls in (("chargebee", ChargebeeHook), ("customcrm", CustomcrmHook)):
        info = hooks[conn_type]
        assert info is not None and info.hook_class_name == f"{cls.__module__}.{cls.__name__}"
        assert info.connection_id_attribute_name == cls.conn_name_attr and info.connection_testable

    pm = ProvidersManager()  # what the UI and the CLI use
    assert "airflow-crmsync" in pm.providers
    widgets = pm.connection_form_widgets
    assert {
        "extra__chargebee__base_url",
        "extra__chargebee__rate_limit_per_minute",
        "extra__chargebee__max_workers",
        "extra__chargebee__timeout",
        "extra__customcrm__timeout",
    } <= set(widgets)
    assert pm.field_behaviours["chargebee"]["relabeling"] == {"host": "Site", "password": "API key"}
    assert pm.field_behaviours["customcrm"]["relabeling"] == {"host": "Base URL", "password": "API token"}


def test_provider_info_returns_fresh_copies() -> None:
    a = get_provider_info()
    a["connection-types"][0]["ui-field-behaviour"]["relabeling"]["host"] = "changed"
    assert get_provider_info()["connection-types"][0]["ui-field-behaviour"]["relabeling"]["host"] == "Site"
