"""The Airflow plugin that adds the "Sync" page: registered through the ``airflow.plugins``
entry point in pyproject.toml, so installing the package is all it takes.

Airflow 3's api-server mounts each plugin's ``fastapi_apps`` under its ``url_prefix`` (the
same origin as the UI, so the UI's login cookie reaches it) and lists each
``external_views`` entry in the navigation; with ``url_route`` the UI shows the page
inside its own frame at ``/plugin/<url_route>``.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

from crmsync.ui.app import URL_PREFIX, create_app


class CrmsyncSyncPlugin(AirflowPlugin):
    """The Sync page (app mounted at ``/crmsync``) and its navigation entry."""

    name = "crmsync"
    fastapi_apps: list[Any] = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "crmsync Sync page"}]
    external_views: list[Any] = [
        {
            "name": "Sync",
            "href": f"{URL_PREFIX}/",
            "destination": "nav",
            "url_route": "crmsync-sync",
            "category": "Browse",
        }
    ]
