"""The Sync page's FastAPI app, mounted by the api-server at ``/crmsync`` (ui/plugin.py).

Auth is Airflow's own: the user is resolved the way every api-server route resolves it
(``airflow.api_fastapi.core_api.security.get_user``: a bearer token, else the UI's login
cookie), and each flow is a DAG for the auth manager: a flow is shown only to a user
who may read its DAG, and release / retry / approve / reject need edit (``PUT``) on it.
Without a login the page redirects to the login page and the JSON API answers 401.
Actions are HTML form POSTs: the login cookie is ``SameSite=Lax``, so a form on another
site cannot post with it.

The link store is read through its connection (each flow's ``connections.store``, by
default ``crmsync_store``), never through Airflow's ORM; every SQL is in store/operator.py.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy.engine import Engine

import crmsync.ui.page as page
from crmsync.store.operator import OperatorStore

URL_PREFIX = "/crmsync"
log = logging.getLogger("crmsync.ui")

#: flow name -> link store connection id (cached: mapping files change with a deploy)
FlowsLoader = Callable[[], dict[str, str]]
EngineFor = Callable[[str], Engine]


def load_flows() -> dict[str, str]:
    """Every flow of the mapping folder the DAG file reads, with its store connection id."""
    from crmsync.mapping.model import load_mappings
    from crmsync.mapping.order import mappings_dir

    return {m.flow: m.connections.store for m in load_mappings(mappings_dir())}


def default_engine(conn_id: str) -> Engine:
    from crmsync.store.engine import store_engine

    return store_engine(conn_id)


def decide_delete() -> Callable[..., bool] | None:
    """``crmsync.store.approvals.decide_delete`` if the installed package has it (the
    approve / reject buttons are hidden otherwise)."""
    try:
        module = importlib.import_module("crmsync.store.approvals")
    except ImportError:
        return None
    fn = getattr(module, "decide_delete", None)
    return fn if callable(fn) else None


async def current_user(request: Request) -> Any:
    """The logged-in Airflow user; HTTP 401 (or 403 for a bad token) otherwise."""
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user

    credentials = await bearer_scheme(request)
    return await get_user(request, None, credentials)


async def optional_user(request: Request) -> Any:
    """The logged-in user, or None without a login (the page then redirects to it)."""
    try:
        return await current_user(request)
    except HTTPException as exc:
        if exc.status_code == 401:
            return None
        raise


def may(user: Any, flow: str, method: str) -> bool:
    """Whether the auth manager lets ``user`` do ``method`` on the flow's DAG."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails

    return bool(get_auth_manager().is_authorized_dag(method=method, details=DagDetails(id=flow), user=user))  # type: ignore[arg-type]


def login_url(request: Request) -> str:
    from airflow.api_fastapi.app import get_auth_manager

    base = get_auth_manager().get_url_login()
    target = str(request.url)
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}{urlencode({'next': target})}"


class SyncApp:
    """The routes, with the flows and the store engine injectable (tests)."""

    def __init__(self, flows: FlowsLoader, engine_for: EngineFor) -> None:
        self._flows = functools.cache(flows)
        self._engine_for = engine_for

    def flows(self, user: Any) -> dict[str, str]:
        return {f: conn for f, conn in self._flows().items() if may(user, f, "GET")}

    def store(self, conn_id: str) -> OperatorStore:
        return OperatorStore(self._engine_for(conn_id))

    def flow_view(self, user: Any, flow: str, conn_id: str, search: str) -> page.FlowView:
        store = self.store(conn_id)
        total, links = store.links(flow, search)
        return page.FlowView(
            flow=flow,
            runs=store.runs(flow),
            links_total=total,
            links=links,
            search=search,
            holds=store.holds(flow),
            conflicts=store.audit(flow, page.CONFLICT_KINDS),
            deletes=store.audit(flow, page.DELETE_KINDS),
            can_edit=may(user, flow, "PUT"),
            can_decide=decide_delete() is not None,
        )

    def overview(self, flows: dict[str, str]) -> list[tuple[str, dict[str, Any] | None]]:
        out: list[tuple[str, dict[str, Any] | None]] = []
        for flow, conn_id in flows.items():
            runs = self.store(conn_id).runs(flow, limit=1)
            out.append((flow, runs[0] if runs else None))
        return out

    def act(self, user: Any, flow: str, action: str, side: str, record_id: str) -> str:
        """Do one operator action; the message shown on the page afterwards."""
        flows = self.flows(user)
        if flow not in flows:
            raise HTTPException(404, f"no flow {flow!r}")
        if not may(user, flow, "PUT"):
            raise HTTPException(403, f"editing DAG {flow} is not permitted to this user")
        engine = self._engine_for(flows[flow])
        who = str(user.get_name())
        if action in ("release", "retry"):
            store = OperatorStore(engine)
            done = (store.release if action == "release" else store.request_retry)(flow, side, record_id)
        elif action in ("approve", "reject"):
            decide = decide_delete()
            if decide is None:
                raise HTTPException(404, "approvals are not available in this version")
            done = bool(decide(engine, flow, side, record_id, approve=action == "approve", by=who))
        else:
            raise HTTPException(400, f"unknown action {action!r}")
        log.info("Sync page: %s %s %s %s by %s: %s", action, flow, side, record_id, who, done)
        return str(page.action_message(action, side, record_id, done))


def create_app(flows: FlowsLoader = load_flows, engine_for: EngineFor = default_engine) -> FastAPI:
    """The Sync page app (``/`` the page, ``/api/flows/{flow}`` the same data as JSON,
    ``/action`` the operator's POSTs)."""
    sync = SyncApp(flows, engine_for)
    app = FastAPI(title="crmsync Sync page", docs_url=None, redoc_url=None, openapi_url=None)

    # The routes are plain functions: FastAPI runs them in its thread pool, so the link
    # store's queries never block the api-server's event loop.
    @app.get("/", response_class=HTMLResponse)
    def sync_page(
        request: Request,
        user: Annotated[Any, Depends(optional_user)],
        flow: str = "",
        q: str = "",
        msg: str = "",
    ) -> Response:
        if user is None:
            return RedirectResponse(login_url(request), status_code=303)
        flows = sync.flows(user)
        chosen = flow if flow in flows else next(iter(flows), "")
        view = sync.flow_view(user, chosen, flows[chosen], q) if chosen else None
        return HTMLResponse(page.render(sync.overview(flows), view, msg))

    @app.get("/api/flows/{flow}")
    def flow_json(flow: str, user: Annotated[Any, Depends(current_user)], q: str = "") -> Response:
        flows = sync.flows(user)
        if flow not in flows:
            raise HTTPException(404, f"no flow {flow!r}")
        return JSONResponse(jsonable_encoder(page.as_json(sync.flow_view(user, flow, flows[flow], q))))

    @app.post("/action")
    def action(
        user: Annotated[Any, Depends(current_user)],
        flow: Annotated[str, Form()],
        action: Annotated[str, Form()],
        side: Annotated[str, Form()],
        record_id: Annotated[str, Form()],
    ) -> Response:
        message = sync.act(user, flow, action, side, record_id)
        # relative: back to this app's page whatever prefix it is mounted under
        return RedirectResponse(f"./?{urlencode({'flow': flow, 'msg': message})}", status_code=303)

    return app
