"""Machinery shared by the Chargebee and Customcrm hooks.

Both hooks subclass :class:`airflow.providers.http.hooks.http.HttpHook` (connection
handling, keep-alive adapter, Airflow's hook registry) but send requests themselves
instead of through ``HttpHook.run``, because:

* ``HttpHook.check_response`` logs the whole response body on every 4xx/5xx, and
  bodies carry customer data (and echo submitted values);
* ``HttpHook.get_conn`` copies every unknown connection extra into the request
  headers, which would send our settings (``base_url``, ``rate_limit_per_minute``,
  field-name maps) to the API as headers;
* every request must first take a token from the site's shared rate budget and be
  counted, and the retry policy must see typed errors.

Each request: budget ``acquire()`` → count in ``calls`` → send with (connect, read)
timeouts → map a non-2xx response to a typed :mod:`~crmsync.hooks.errors` error
(429 also pauses the whole budget) → retry per :mod:`~crmsync.hooks.retry`.
"""

from __future__ import annotations

import ipaddress
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypedDict, TypeVar, Unpack, get_args
from urllib.parse import quote, urlsplit

import requests
from airflow.providers.http.hooks.http import HttpHook
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError
from requests_toolbelt.adapters.socket_options import TCPKeepAliveAdapter

from crmsync import __version__
from crmsync.hooks._ui import field_behaviour, form_widgets
from crmsync.hooks.budget import BudgetFactory, RateLimiter, get_budget
from crmsync.hooks.errors import (
    ApiError,
    AuthError,
    Conflict,
    InvalidResponse,
    NotFound,
    PreconditionFailed,
    RateLimited,
    ServerError,
    TransportError,
    ValidationError,
)
from crmsync.hooks.retry import RetryPolicy, call_with_retry, classify_requests_exception, parse_retry_after

SettingsT = TypeVar("SettingsT", bound="HttpSettings")

USER_AGENT = f"crmsync/{__version__} (+apache-airflow)"
_DEFAULT_POOL_SIZE = 10  # requests' HTTPAdapter default pool_maxsize


#: Failures of the transport itself (no usable HTTP response): retried per the policy.
_TRANSPORT_ERRORS = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)


class ConnectionConfigError(ValueError):
    """A connection is missing something or its extra does not validate.

    The message names the connection and each bad key with the reason, never the
    value (a user may have pasted a token into the wrong field).
    """


class HttpSettings(BaseModel):
    """Connection extra keys understood by both hooks.

    Unknown keys are rejected so that a typo (``rate_limit_per_minit``) fails loudly
    at the first call instead of silently running with defaults.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str | None = Field(default=None, description="Override of the API base URL.")
    timeout: float = Field(default=30.0, gt=0, description="Read timeout in seconds.")
    connect_timeout: float | None = Field(default=None, gt=0, description="Default: min(10, timeout).")
    verify: bool | str = Field(default=True, description="TLS verification, or a CA bundle path.")
    rate_limit_per_minute: int | None = Field(default=None, ge=0, description="0 = no client-side limit.")
    rate_limit_burst: int | None = Field(default=None, ge=1)
    max_workers: int = Field(default=4, ge=1, le=64, description="Threads a task may use against this API.")
    max_attempts: int = Field(default=6, ge=1, le=20)
    max_retry_wait: float = Field(default=60.0, ge=0)
    max_total_retry_wait: float = Field(default=300.0, ge=0)
    proxies: dict[str, str] | None = None
    headers: dict[str, str] = Field(default_factory=dict, description="Static extra request headers.")
    change_poll_seconds: float = Field(
        default=15.0, ge=0, description="Seconds between change-detection polls (crmsync.triggers); 0 = off."
    )

    @field_validator("headers")
    @classmethod
    def _no_auth_headers(cls, value: dict[str, str]) -> dict[str, str]:
        if any(k.lower() in {"authorization", "cookie", "proxy-authorization"} for k in value):
            raise ValueError("credentials belong in the connection's password field, not in extra headers")
        return value

    @property
    def timeouts(self) -> tuple[float, float]:
        """``(connect, read)`` timeouts for requests."""
        connect = self.connect_timeout if self.connect_timeout is not None else min(10.0, self.timeout)
        return (connect, self.timeout)

    @model_validator(mode="before")
    @classmethod
    def _drop_empty(cls, data: Any) -> Any:
        # The connection form stores untouched fields as "" or null, meaning "default".
        # An explicit null stays where null means something (idempotency_header: null).
        if not isinstance(data, Mapping):
            return data
        out = {}
        for key, value in data.items():
            if value == "":
                continue
            field = cls.model_fields.get(key)
            if value is None and field is not None and type(None) not in get_args(field.annotation):
                continue
            out[key] = value
        return out


def normalise_extra(extra: Mapping[str, Any], conn_type: str) -> dict[str, Any]:
    """Strip the ``extra__<conn_type>__`` prefix older connection forms add to keys."""
    prefix = f"extra__{conn_type}__"
    out: dict[str, Any] = {}
    for key, value in extra.items():
        out[key.removeprefix(prefix)] = value
    return out


def validate_settings(model: type[SettingsT], extra: Mapping[str, Any], *, conn_id: str) -> SettingsT:
    """Validate a connection extra into ``model`` with an error that names keys, not values."""
    try:
        return model.model_validate(dict(extra))
    except PydanticValidationError as exc:
        problems = []
        for err in exc.errors(include_input=False, include_url=False):
            loc = ".".join(str(p) for p in err["loc"]) or "(extra)"
            problems.append(f"{loc}: {err['msg']}")
        raise ConnectionConfigError(
            f"connection {conn_id!r}: invalid extra: " + "; ".join(problems)
        ) from None


def join_url(base_url: str, path: str) -> str:
    """``base_url`` + ``/`` + ``path`` without doubled or missing slashes."""
    return base_url.rstrip("/") + "/" + path.lstrip("/")


def quote_segment(value: str) -> str:
    """Quote a record id for use as one URL path segment (``/`` and ``?`` included)."""
    if not value:
        raise ValueError("record id must not be empty")
    return quote(str(value), safe="")


def is_loopback(url: str) -> bool:
    """True when ``url`` points at this machine (sandboxes), where plain HTTP is fine."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HookClients(TypedDict, total=False):
    """What the task that builds a hook injects into it (each optional: a hook built
    outside a task, e.g. in a test or a notebook, finds its own)."""

    #: one rate budget to use (tests); otherwise ``budget_factory`` or the process's
    budget: RateLimiter | None
    #: the retry policy; otherwise one built from the connection's extra
    retry_policy: RetryPolicy | None
    #: builds the budget for this hook's site (the task's: shared through the link store)
    budget_factory: BudgetFactory | None


@dataclass(frozen=True)
class ErrorReport:
    """What an API's error body says, read by a hook's :meth:`ApiHook._read_error`."""

    code: str | None
    message: str | None
    param: str | None = None
    #: the error class the API's own error code names (None: the status decides)
    cls: type[ApiError] | None = None
    #: every ``(field, message)`` the API reported (a ValidationError carries them)
    errors: list[tuple[str | None, str]] = field(default_factory=list)


class ApiHook(HttpHook):
    """Common base of the two API hooks (not registered as a connection type itself).

    A subclass names its API in the class statement (``system=``, ``hook_name=``: see
    :meth:`__init_subclass__`), sets ``settings_model``/``conn_fields``/``ui_behaviour`` and
    implements :meth:`_resolve_base_url`, :meth:`_auth` and :meth:`_read_error`.

    The clients a task (or a test) may pass to a subclass's constructor (:class:`HookClients`):

    :param budget: override the shared rate budget (tests, custom limiters).
    :param retry_policy: override the retry policy derived from the connection.
    :param budget_factory: what makes the site's limiter (a task passes
        :func:`~crmsync.hooks.budget.task_budget_factory`'s, shared through the link store);
        default: the process's (:func:`~crmsync.hooks.budget.budget_factory`).
    """

    system: ClassVar[str] = "api"
    settings_model: ClassVar[type[HttpSettings]] = HttpSettings
    #: Requests per minute when the extra does not say (``None`` = no client-side limit).
    default_rate_per_minute: ClassVar[int | None] = None
    #: Pause after a 429 that carries no ``Retry-After`` (``None`` = normal backoff).
    default_rate_limit_pause: ClassVar[float | None] = None
    #: the connection form's extra fields and relabelling (provider-info format, from
    #: :mod:`crmsync.provider`, so the form and the provider info cannot disagree)
    conn_fields: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    ui_behaviour: ClassVar[Mapping[str, Any]] = {}
    #: error classes of statuses this API uses its own way (before :data:`STATUS_ERRORS`)
    status_errors: ClassVar[Mapping[int, type[ApiError]]] = {}

    def __init_subclass__(cls, *, system: str = "", hook_name: str = "", **kwargs: Any) -> None:
        """Name a subclass's API once: ``system`` is its connection type, and the connection
        attributes Airflow reads follow from it (``<system>_conn_id``, ``<system>_default``),
        so the hooks cannot spell them differently."""
        super().__init_subclass__(**kwargs)
        if system:
            cls.system = cls.conn_type = system
            cls.conn_name_attr = f"{system}_conn_id"
            cls.default_conn_name = f"{system}_default"
        if hook_name:
            cls.hook_name = hook_name

    def __init__(self, conn_id: str, **clients: Unpack[HookClients]) -> None:
        super().__init__(method="GET", http_conn_id=conn_id)
        budget = clients.get("budget")
        budget_factory = clients.get("budget_factory")
        retry_policy = clients.get("retry_policy")
        #: Requests sent (every attempt, retries included), by ``"METHOD path-template"``.
        self.calls: Counter[str] = Counter()
        #: seconds this hook's requests waited for the rate budget (progress lines show it)
        self.budget_waited = 0.0
        self._calls_lock = threading.Lock()
        self._budget_override = budget
        self._budget_factory = budget_factory
        self._policy_override = retry_policy
        self._init_lock = threading.Lock()
        self._local = threading.local()
        self._ready = False
        self._settings: HttpSettings | None = None
        self._budget: RateLimiter | None = None
        self._policy: RetryPolicy | None = None
        self._auth_obj: Any = None

    # ------------------------------------------------------------- UI metadata

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Extra fields of the connection form (legacy path; Airflow 3.3 reads provider info)."""
        return form_widgets(cls.conn_fields)

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Relabel host and password to what the API calls them; hide what it does not use."""
        return field_behaviour(cls.ui_behaviour)

    def _invalid(
        self, message: str, method: str, template: str, status: int = 200, code: str = "invalid_response"
    ) -> InvalidResponse:
        """A 2xx response whose body is not what the API documents (never retried: the
        same request would get the same body)."""
        return InvalidResponse(self.system, status, code, message, None, method, template)

    def _next_page(self, token: Any, seen: set[str], what: str, template: str, status: int) -> str | None:
        """The next page's offset or cursor (``what``), None after the last page. One the
        list already returned is a paging loop: an InvalidResponse, never an endless read."""
        if token in (None, ""):
            return None
        text = str(token)
        if text in seen:
            raise self._invalid(f"{what} repeated", "GET", template, status=status, code="paging_loop")
        seen.add(text)
        return text

    # ------------------------------------------------------------------ config

    def _resolve_base_url(self, conn: Any, settings: HttpSettings) -> str:
        raise NotImplementedError

    def _auth(self, conn: Any, settings: HttpSettings) -> Any:
        raise NotImplementedError

    def _password(self, conn: Any, secret: str) -> str:
        """The connection's password, the API's ``secret`` (named in the error when empty)."""
        if not conn.password:
            raise ConnectionConfigError(
                f"connection {self.http_conn_id!r}: the {secret} (password field) is empty"
            )
        return str(conn.password)

    def _budget_key(self) -> str:
        parts = urlsplit(self.base_url)
        return f"{self.system}:{parts.netloc}{parts.path}".rstrip("/")

    def _ensure_ready(self) -> None:
        """Load the connection once per hook (thread-safe) and derive everything from it."""
        if self._ready:
            return
        with self._init_lock:
            if self._ready:
                return
            conn = self.get_connection(self.http_conn_id)
            extra = normalise_extra(conn.extra_dejson or {}, self.conn_type)
            settings = validate_settings(self.settings_model, extra, conn_id=self.http_conn_id)
            base_url = self._resolve_base_url(conn, settings).rstrip("/")
            scheme = urlsplit(base_url).scheme
            if scheme not in {"http", "https"}:
                raise ConnectionConfigError(
                    f"connection {self.http_conn_id!r}: base URL must start with http:// or https://"
                )
            if scheme == "http" and not is_loopback(base_url):
                self.log.warning(
                    "%s connection %r uses plain HTTP to a non-local host; credentials travel unencrypted",
                    self.system,
                    self.http_conn_id,
                )
            self.base_url = base_url
            self._base_url_initialized = True
            self._auth_obj = self._auth(conn, settings)
            self._settings = settings
            workers = self._max_workers(settings)
            if self.adapter is None and workers > _DEFAULT_POOL_SIZE:
                # One pooled connection per worker thread; urllib3's default pool of 10
                # would otherwise discard and reopen connections under load.
                self.keep_alive_adapter = TCPKeepAliveAdapter(
                    idle=120, count=20, interval=30, pool_maxsize=workers
                )
            self._policy = self._policy_override or RetryPolicy(
                max_attempts=settings.max_attempts,
                max_wait=settings.max_retry_wait,
                max_total_wait=settings.max_total_retry_wait,
            )
            if self._budget_override is not None:
                self._budget = self._budget_override
            else:
                rate = settings.rate_limit_per_minute
                if rate is None:
                    rate = self.default_rate_per_minute
                self._budget = get_budget(
                    self._budget_key(), rate, settings.rate_limit_burst, factory=self._budget_factory
                )
            self._ready = True

    def _set_base_url(self, connection: Any) -> None:
        # HttpHook.url_from_endpoint / run call this; keep one source of truth.
        self._ensure_ready()

    @property
    def settings(self) -> HttpSettings:
        """The validated connection extra."""
        self._ensure_ready()
        assert self._settings is not None
        return self._settings

    @property
    def budget(self) -> RateLimiter:
        """The site's rate budget, shared by every hook of the site in the process and,
        for a hook a task built with its ``budget_factory``, by every worker process
        (see :mod:`crmsync.hooks.budget`)."""
        self._ensure_ready()
        assert self._budget is not None
        return self._budget

    @property
    def retry_policy(self) -> RetryPolicy:
        self._ensure_ready()
        assert self._policy is not None
        return self._policy

    @property
    def max_workers(self) -> int:
        """How many threads a task should use against this API (connection extra ``max_workers``)."""
        return self._max_workers(self.settings)

    def _max_workers(self, settings: HttpSettings) -> int:
        return settings.max_workers

    # ----------------------------------------------------------------- session

    def get_conn(
        self, headers: dict[Any, Any] | None = None, extra_options: dict[str, Any] | None = None
    ) -> requests.Session:
        """Return a new ``requests.Session`` configured from the connection.

        Unlike ``HttpHook.get_conn`` this never turns connection extras into headers.
        TLS verification is on unless the extra says ``"verify": false``.
        """
        self._ensure_ready()
        settings = self.settings
        session = requests.Session()
        session.auth = self._auth_obj
        session.verify = settings.verify
        if settings.proxies:
            session.proxies.update(settings.proxies)
        # requests reads the proxy and CA-bundle variables of the environment again for
        # every request (two scans of os.environ: a sixth of a writer thread's CPU in the
        # benchmarks). Every request of a hook goes to one base URL, so read them once,
        # here, with requests' own precedence (environment proxies over the extra's).
        # (The CA bundle variables are applied per request: see ``_verify``.)
        session.trust_env = False
        session.proxies.update(requests.utils.get_environ_proxies(self.base_url, no_proxy=None))
        if session.auth is None:
            session.auth = requests.utils.get_netrc_auth(self.base_url)
        session.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json"})
        session.headers.update(settings.headers)
        if headers:
            session.headers.update(headers)
        if self.adapter is not None:
            session.mount("http://", self.adapter)
            session.mount("https://", self.adapter)
        elif self.keep_alive_adapter is not None:
            session.mount("http://", self.keep_alive_adapter)
            session.mount("https://", self.keep_alive_adapter)
        return session

    @staticmethod
    def _verify(session: requests.Session) -> Any:
        """TLS verification of a request, as requests derives it with ``trust_env`` on."""
        if session.verify is True:
            return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        return session.verify

    def _session(self) -> requests.Session:
        # One session per thread: requests.Session is not documented as thread-safe,
        # while the mounted adapter's connection pool is, so threads still share sockets.
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self.get_conn()
            self._local.session = session
        return session

    def close(self) -> None:
        """Close this thread's session (pooled connections are closed with the adapter)."""
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is not None:
            session.close()
            self._local.session = None

    def check_response(self, response: requests.Response) -> None:
        """Raise a typed error for a non-2xx response without logging its body.

        Overrides ``HttpHook.check_response`` (which logs ``response.text``) so that even
        ``HttpHook.run`` on these hooks stays body-free.
        """
        if response.status_code >= 400:
            raise self._error_from_response(
                response, response.request.method or "?", urlsplit(response.url).path
            )

    # ----------------------------------------------------------------- request

    def _error_from_response(self, response: requests.Response, method: str, template: str) -> ApiError:
        """The typed error of a non-2xx response: the subclass reads its API's error body
        (:meth:`_read_error`), :func:`api_error` picks the class (the API's own error code
        first, then the status: :attr:`status_errors`, then the common meanings)."""
        report = self._read_error(response, error_body(response))
        args = (
            self.system,
            response.status_code,
            report.code,
            report.message,
            report.param,
            method,
            template,
        )
        return api_error(response, args, report.cls, self.status_errors, errors=report.errors)

    def _read_error(self, response: requests.Response, body: dict[str, Any]) -> ErrorReport:
        """What the API's error ``body`` (``{}`` when not JSON) says about ``response``."""
        raise NotImplementedError

    def _count(self, key: str, waited: float = 0.0) -> None:
        with self._calls_lock:
            self.calls[key] += 1
            self.budget_waited += waited

    def _send_once(
        self,
        method: str,
        url: str,
        template: str,
        *,
        params: Any,
        data: Any,
        headers: Mapping[str, str] | None,
    ) -> requests.Response:
        waited = float(self.budget.acquire() or 0.0)
        key = f"{method} {template}"
        self._count(key, waited)
        started = time.monotonic()
        try:
            session = self._session()
            response = session.request(
                method,
                url,
                params=params,
                data=data,
                headers=dict(headers) if headers else None,
                timeout=self.settings.timeouts,
                verify=self._verify(session),
            )
        except _TRANSPORT_ERRORS as exc:
            kind, sent = classify_requests_exception(exc)
            raise TransportError(self.system, kind, method=method, path=template, sent=sent) from None
        except requests.exceptions.RequestException as exc:
            # InvalidURL, MissingSchema, TooManyRedirects...: a configuration problem that
            # no retry will fix. The class name only: the text holds the URL.
            raise ApiError(
                self.system, None, "request_error", type(exc).__name__, None, method, template
            ) from None
        self.log.debug(
            "%s %s %s -> %s (%.2f s)",
            self.system,
            method,
            template,
            response.status_code,
            time.monotonic() - started,
        )
        if response.status_code >= 400:
            error = self._error_from_response(response, method, template)
            response.close()
            if isinstance(error, RateLimited):
                if error.retry_after is None and self.default_rate_limit_pause is not None:
                    error.retry_after = self.default_rate_limit_pause
                if error.retry_after is not None:
                    self.budget.penalise(error.retry_after)
            raise error
        return response

    def _request(
        self,
        method: str,
        template: str,
        path: str,
        *,
        params: Any = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        replay_safe: bool = True,
    ) -> requests.Response:
        """Send one logical request with budget, counting, typed errors and retries.

        :param template: path template for logs, errors and ``calls`` (``customers/{id}``).
        :param path: the concrete path, relative to the base URL, ids already quoted.
        :param replay_safe: whether sending the request twice is harmless (see retry module).
        """
        self._ensure_ready()
        url = join_url(self.base_url, path)

        def attempt() -> requests.Response:
            return self._send_once(method, url, template, params=params, data=data, headers=headers)

        return call_with_retry(
            attempt,
            self.retry_policy,
            replay_safe=replay_safe,
            what=f"{self.system} {method} {template}",
            logger=self.log,
        )

    def _json(self, response: requests.Response, method: str, template: str) -> Any:
        """Decode a 2xx body as JSON, or raise :class:`InvalidResponse` (without the body)."""
        try:
            return response.json()
        except ValueError:
            ctype = short_content_type(response)
            raise InvalidResponse(
                self.system,
                response.status_code,
                "invalid_response",
                f"expected a JSON body, got {ctype or 'no content type'}",
                None,
                method,
                template,
            ) from None


def short_content_type(response: requests.Response) -> str:
    """The media type of a response without parameters (for error messages)."""
    return (response.headers.get("Content-Type") or "").split(";")[0].strip()


def retry_after_of(response: requests.Response, now: Callable[[], float] = time.time) -> float | None:
    """Seconds from ``Retry-After`` of ``response``, if present and parseable."""
    return parse_retry_after(response.headers.get("Retry-After"), now=now)


#: The error class for an HTTP status that both APIs use the same way (5xx: ServerError).
STATUS_ERRORS: Mapping[int, type[ApiError]] = {
    400: ValidationError,
    401: AuthError,
    403: AuthError,
    404: NotFound,
    409: Conflict,
    412: PreconditionFailed,
    422: ValidationError,
    429: RateLimited,
}


def api_error(
    response: requests.Response,
    args: tuple[Any, ...],
    cls: type[ApiError] | None = None,
    statuses: Mapping[int, type[ApiError]] | None = None,
    **extra: Any,
) -> ApiError:
    """The typed error for a non-2xx ``response``: ``cls`` when the API's own error code
    named one, else by status (``statuses`` first: an API's own uses, then
    :data:`STATUS_ERRORS`). Rate-limit and server errors carry the ``Retry-After``; ``extra``
    goes to a :class:`ValidationError` (its per-field ``errors``)."""
    status = response.status_code
    if cls is None:
        cls = (statuses or {}).get(status) or STATUS_ERRORS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else ApiError
    if cls in (RateLimited, ServerError):
        return cls(*args, retry_after=retry_after_of(response))
    if cls is ValidationError:
        return ValidationError(*args, **extra)
    return cls(*args)


def error_body(response: requests.Response) -> dict[str, Any]:
    """The decoded JSON error body, or ``{}`` (HTML error pages, empty bodies)."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


__all__ = [
    "ApiHook",
    "ConnectionConfigError",
    "HttpSettings",
    "error_body",
    "is_loopback",
    "join_url",
    "normalise_extra",
    "quote_segment",
    "retry_after_of",
    "short_content_type",
    "validate_settings",
]
