"""Provider metadata for Airflow's ProvidersManager.

Airflow discovers this through the ``apache_airflow_provider`` entry point in
``pyproject.toml``. It registers:

* the two connection types, with their connection-form fields and relabelling
  declared here (Airflow 3.2+ reads ``conn-fields``/``ui-field-behaviour`` from provider
  info without importing the hooks; the hooks' ``get_connection_form_widgets`` /
  ``get_ui_field_behaviour`` are derived from the same constants);
* the link store's DB manager, so ``airflow db migrate`` also migrates our tables.

Keep this module import-light: Airflow calls it while it is still configuring
itself, and a failing import here breaks *every* ``airflow`` command.
"""

from __future__ import annotations

import copy
from typing import Any

from crmsync import __version__


def _int_field(label: str, default: int | None, description: str) -> dict[str, Any]:
    return {
        "label": label,
        "schema": {"type": ["integer", "null"], "default": default},
        "description": description,
    }


CHARGEBEE_CONN_FIELDS: dict[str, dict[str, Any]] = {
    "base_url": {
        "label": "Base URL override",
        "schema": {"type": ["string", "null"]},
        "description": "Leave empty for https://<site>.chargebee.com/api/v2; "
        "set e.g. http://127.0.0.1:8602/api/v2 for the local sandbox.",
    },
    "rate_limit_per_minute": _int_field(
        "Rate limit per minute",
        150,
        "Requests per minute for this site, shared by every flow in a worker "
        "(150 on test sites and Starter, 1000 Performance, 3500 Enterprise).",
    ),
    "max_workers": _int_field(
        "Max workers",
        None,
        "Threads a task may use against this site; empty: enough to fill the rate limit "
        "at 0.5 s per request (4 to 32).",
    ),
    "timeout": _int_field("Timeout (s)", 30, "Read timeout per request; connect timeout is min(10, this)."),
    "change_poll_seconds": _int_field(
        "Change poll (s)",
        15,
        "Seconds between the triggerer's polls for changes (one GET /events per site for every "
        "flow: 15 s is 4 requests a minute); 0 stops event-driven runs for this site.",
    ),
}

CHARGEBEE_UI_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "port", "login"],
    "relabeling": {"host": "Site", "password": "API key"},
    "placeholders": {
        "host": "acme-test (or a full base URL for a sandbox, e.g. http://127.0.0.1:8602/api/v2)",
        "password": "Chargebee API key (full access)",
        "extra": '{"verify": true, "max_attempts": 6}',
    },
}

CUSTOMCRM_CONN_FIELDS: dict[str, dict[str, Any]] = {
    "rate_limit_per_minute": _int_field(
        "Rate limit per minute", None, "Client-side request budget; empty or 0 = none."
    ),
    "max_workers": _int_field("Max workers", 4, "Threads a task may use against the CRM."),
    "timeout": _int_field("Timeout (s)", 30, "Read timeout per request; connect timeout is min(10, this)."),
    "change_poll_seconds": _int_field(
        "Change poll (s)",
        15,
        "Seconds between the triggerer's polls for changes (one small list request per flow); "
        "0 stops event-driven runs for this CRM.",
    ),
}

CUSTOMCRM_UI_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "port", "login"],
    "relabeling": {"host": "Base URL", "password": "API token"},
    "placeholders": {
        "host": "https://crm.example.com/api (sandbox: http://127.0.0.1:8601)",
        "password": "Bearer token",
        "extra": '{"resource_paths": {"contacts": "people"}, '
        '"fields": {"id": "Id", "version": "Version", "updated_at": "UpdatedAt"}}',
    },
}


def get_provider_info() -> dict[str, Any]:
    """Return the provider info dict Airflow validates against its provider schema."""
    return {
        "package-name": "airflow-crmsync",
        "name": "CRM sync (Customcrm and Chargebee)",
        "description": "Two-way sync between an in-house CRM (Customcrm) and Chargebee.",
        "versions": [__version__],
        "connection-types": [
            {
                "hook-class-name": "crmsync.hooks.chargebee.ChargebeeHook",
                "hook-name": "Chargebee",
                "connection-type": "chargebee",
                "conn-fields": copy.deepcopy(CHARGEBEE_CONN_FIELDS),
                "ui-field-behaviour": copy.deepcopy(CHARGEBEE_UI_BEHAVIOUR),
            },
            {
                "hook-class-name": "crmsync.hooks.customcrm.CustomcrmHook",
                "hook-name": "Customcrm",
                "connection-type": "customcrm",
                "conn-fields": copy.deepcopy(CUSTOMCRM_CONN_FIELDS),
                "ui-field-behaviour": copy.deepcopy(CUSTOMCRM_UI_BEHAVIOUR),
            },
        ],
        "db-managers": ["crmsync.store.db_manager.LinkStoreDBManager"],
    }
