"""Connection-form metadata helpers shared by the hooks.

Airflow 3.3 reads connection-form metadata declaratively from the provider info
(``conn-fields`` / ``ui-field-behaviour`` in :mod:`crmsync.provider`) without
importing hooks. Older code paths still call the hooks' ``get_connection_form_widgets``
and ``get_ui_field_behaviour``; these helpers derive both from the same provider-info
constants so the two can never disagree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def field_behaviour(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Provider-info ``ui-field-behaviour`` (kebab-case) → hook method format (snake_case)."""
    return {
        "hidden_fields": list(spec.get("hidden-fields", [])),
        "relabeling": dict(spec.get("relabeling", {})),
        "placeholders": dict(spec.get("placeholders", {})),
    }


def form_widgets(fields: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Provider-info ``conn-fields`` → WTForms fields, for Airflow versions that still ask hooks."""
    from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
    from flask_babel import lazy_gettext
    from wtforms import BooleanField, IntegerField, StringField

    widgets: dict[str, Any] = {}
    for name, spec in fields.items():
        schema = spec.get("schema", {})
        types: Sequence[str] = schema.get("type", ["string"])
        label = lazy_gettext(spec.get("label", name))
        description = spec.get("description", "")
        default = schema.get("default")
        if "boolean" in types:
            widgets[name] = BooleanField(label, description=description, default=default)
        elif "integer" in types:
            widgets[name] = IntegerField(
                label, widget=BS3TextFieldWidget(), description=description, default=default
            )
        else:
            widgets[name] = StringField(
                label, widget=BS3TextFieldWidget(), description=description, default=default
            )
    return widgets
