"""Typed errors raised by the Chargebee and Customcrm hooks.

The sync engine decides per error *class* what to do with a record (quarantine it,
re-read and retry, wait for the next run, fail the task), so each HTTP failure mode
gets its own type instead of a generic ``AirflowException`` carrying a status code.

Messages are built for task logs that many people read: they name the system, the
method, the path *template* (``customers/{id}``, never the concrete id or query
string), the status, the API's error code, the offending parameter and the API's
own short message (truncated). They never contain a response body, a header, a
credential, or request data, because those end up in logs and in quarantine rows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

#: Longest API message we copy into an error; API messages are short, anything
#: longer is probably an echoed payload or an HTML error page.
MAX_MESSAGE_CHARS = 300

_WS = re.compile(r"\s+")


def short_message(value: object, limit: int = MAX_MESSAGE_CHARS) -> str:
    """Return ``value`` as a one-line string of at most ``limit`` characters.

    Control characters and line breaks are collapsed so an API message can never
    forge extra log lines.
    """
    if value is None:
        return ""
    text = _WS.sub(" ", str(value)).strip()
    text = "".join(ch for ch in text if ch.isprintable())
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


class ApiError(Exception):
    """An API call failed.

    :param system: ``"chargebee"`` or ``"customcrm"``.
    :param status: HTTP status, or ``None`` when no response arrived.
    :param code: the API's machine-readable error code (Chargebee ``api_error_code``,
        the last segment of a problem+json ``type``), or a code of ours.
    :param message: the API's own short human message.
    :param param: the request parameter / field the API blamed, if any.
    :param method: HTTP method.
    :param path: path template, e.g. ``customers/{id}``.
    :param retry_after: seconds the server asked us to wait (``Retry-After``), if any.
    :param errors: every ``(field, message)`` pair the API reported (Customcrm's
        problem+json ``errors``); kept as :attr:`errors`, messages shortened.
    """

    #: Whether retrying the same request later may succeed. Subclasses override.
    default_retryable = False

    def __init__(
        self,
        system: str,
        status: int | None,
        code: str | None,
        message: str | None,
        param: str | None = None,
        method: str | None = None,
        path: str | None = None,
        *,
        retry_after: float | None = None,
        errors: Sequence[tuple[str | None, str]] = (),
    ) -> None:
        self.system = system
        self.status = status
        self.code = code or None
        self.message = short_message(message)
        self.param = param or None
        self.method = method
        self.path = path
        self.retry_after = retry_after
        self.errors: list[tuple[str | None, str]] = [
            (f, short_message(m, 200)) for f, m in self._field_errors(errors)
        ]
        super().__init__(self._render())

    def _field_errors(self, errors: Sequence[tuple[str | None, str]]) -> list[tuple[str | None, str]]:
        """The per-field errors to keep: what the API reported (subclasses add a fallback)."""
        return list(errors)

    @property
    def retryable(self) -> bool:
        """Whether the hook's retry policy may repeat the request after this error."""
        return self.default_retryable

    def _render(self) -> str:
        what = " ".join(p for p in (self.system, self.method, self.path) if p)
        parts = [f"HTTP {self.status}" if self.status is not None else "no response"]
        if self.code:
            parts.append(self.code)
        if self.param:
            parts.append(f"param {self.param!r}")
        text = f"{what} failed: {', '.join(parts)}"
        if self.message:
            text += f": {self.message}"
        return text

    def __str__(self) -> str:
        return self._render()

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep errors picklable (process pools, Airflow's exception serialisation):
        # the default reduce would call __init__ with the rendered message only.
        return (_rebuild, (type(self), self.__dict__.copy()))


def _rebuild(cls: type[ApiError], state: dict[str, Any]) -> ApiError:
    err = cls.__new__(cls)
    err.__dict__.update(state)
    Exception.__init__(err, err._render())
    return err


class NotFound(ApiError):
    """404 (or 410 Gone): the record does not exist (any more)."""


class Conflict(ApiError):
    """The write conflicts with existing state, e.g. Chargebee ``duplicate_entry`` on create.

    After a crash between a remote create and the local link, a rerun's create hits
    this; the engine then looks the record up instead of creating a duplicate.
    """


class PreconditionFailed(ApiError):
    """412 (or 428): the ``If-Match`` version is stale; someone else wrote the record.

    The engine re-reads the record and merges again rather than overwriting.
    Note that a PATCH whose response was lost and that the retry policy replayed also
    ends here (the first attempt already bumped the version); the re-read then shows
    our own values and the merge settles without a write.
    """


class RateLimited(ApiError):
    """429: over the API's request budget. Retryable after ``retry_after`` seconds."""

    default_retryable = True


class ServerError(ApiError):
    """5xx: the server failed. Retryable with backoff."""

    default_retryable = True


class AuthError(ApiError):
    """401/403: wrong or missing credentials, or not allowed. Never retried."""


class ValidationError(ApiError):
    """400/422: the API rejected the request's data (invalid email, value too long, ...).

    ``param`` / ``field`` names the first offending field; ``errors`` lists every
    ``(field, message)`` pair the API reported. The engine quarantines the record
    with this message and carries on with the batch.
    """

    def _field_errors(self, errors: Sequence[tuple[str | None, str]]) -> list[tuple[str | None, str]]:
        """What the API reported, else the one field and message it blamed (so a
        quarantine row always has a field error to show)."""
        return list(errors) or ([(self.param, self.message)] if self.param or self.message else [])

    @property
    def field(self) -> str | None:
        """Alias of ``param`` in Customcrm's vocabulary."""
        return self.param


class TransportError(ApiError):
    """No usable response: connection refused/reset, DNS failure, timeout, broken TLS.

    ``sent`` tells whether the request may have reached the server. When it did not
    (connect failed or timed out) replaying it is always safe; when it may have (read
    timeout, connection dropped mid-response) replaying a non-idempotent write could
    apply it twice, so the retry policy only replays requests that are safe to repeat.
    The underlying exception is not chained because its text contains the full URL,
    query string included, which may carry customer data such as an email filter.
    """

    def __init__(
        self,
        system: str,
        kind: str,
        *,
        method: str | None = None,
        path: str | None = None,
        sent: bool = True,
    ) -> None:
        self.kind = kind
        self.sent = sent
        super().__init__(system, None, kind, None, None, method, path)

    @property
    def retryable(self) -> bool:
        return True

    def _render(self) -> str:
        what = " ".join(p for p in (self.system, self.method, self.path) if p)
        stage = "before the request was sent" if not self.sent else "no response"
        return f"{what} failed: {self.kind} ({stage})"


class InvalidResponse(ApiError):
    """A 2xx response we cannot use (not JSON, missing the expected object key)."""


__all__ = [
    "ApiError",
    "AuthError",
    "Conflict",
    "InvalidResponse",
    "NotFound",
    "PreconditionFailed",
    "RateLimited",
    "ServerError",
    "TransportError",
    "ValidationError",
    "short_message",
]
