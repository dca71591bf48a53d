"""Chargebee-shaped API errors.

Chargebee answers every failure with JSON ``{"message", "type", "api_error_code",
"param", "http_status_code"}`` (plus the deprecated ``error_code``/``error_msg``/
``error_param`` trio that older clients read). ``type`` groups errors by how a client
should react (``invalid_request``, ``payment``, ``operation_failed``) and is absent for
transport-level errors (authentication, rate limit, server errors) - the official SDKs
raise a plain ``APIError`` for those, so the sandbox leaves it out too.

Messages follow Chargebee's ``"<param> : <reason>"`` style.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error answer; raise it anywhere in a handler."""

    def __init__(
        self,
        status: int,
        api_error_code: str,
        message: str,
        *,
        param: str | None = None,
        type: str | None = "invalid_request",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.api_error_code = api_error_code
        self.message = message
        self.param = param
        self.type = type
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message": self.message}
        if self.type:
            body["type"] = self.type
        body["api_error_code"] = self.api_error_code
        if self.param:
            body["param"] = self.param
        body["error_code"] = self.api_error_code
        body["error_msg"] = self.message
        if self.param:
            body["error_param"] = self.param
        body["http_status_code"] = self.status
        return body


def wrong_value(param: str, reason: str) -> ApiError:
    """400 ``param_wrong_value`` naming ``param`` (invalid email, too long, bad enum...)."""
    return ApiError(400, "param_wrong_value", f"{param} : {reason}", param=param)


def required(param: str) -> ApiError:
    """A mandatory parameter is missing: Chargebee reports ``param_wrong_value``."""
    return ApiError(400, "param_wrong_value", f"{param} : cannot be blank", param=param)


def not_allowed(param: str, hint: str = "") -> ApiError:
    """A parameter this operation does not accept (e.g. ``billing_address[...]`` on update)."""
    msg = f"{param} : is not allowed for this operation"
    if hint:
        msg += f". {hint}"
    return ApiError(400, "param_not_allowed", msg, param=param)


def duplicate(param: str, value: str) -> ApiError:
    return ApiError(400, "duplicate_entry", f"{param} : The value {value} is already present.", param=param)


def not_found(what: str, param: str | None = None) -> ApiError:
    return ApiError(404, "resource_not_found", f"Sorry, we couldn't find that resource: {what}", param=param)


def invalid_state(message: str) -> ApiError:
    return ApiError(400, "invalid_state_for_request", message)


def manual_orders_refused() -> ApiError:
    """``POST /orders`` on a site with current order management (every site since
    2021-10-01): orders are generated from invoices, and the manual create belongs to
    legacy order management. Chargebee's error reference answers a request "not
    compatible with the configuration in the site" with ``configuration_incompatible``
    (400, ``invalid_request``); that code is used here, the message is the sandbox's."""
    return ApiError(
        400,
        "configuration_incompatible",
        "Orders cannot be created manually on this site: with current order management, "
        "Chargebee generates orders from invoices (creating an order is legacy order management).",
    )


def auth_failed() -> ApiError:
    return ApiError(
        401,
        "api_authentication_failed",
        "Sorry, authentication failed. Invalid api key",
        type=None,
    )


def rate_limited(retry_after: int) -> ApiError:
    return ApiError(
        429,
        "api_request_limit_exceeded",
        "Sorry, access has been blocked temporarily due to request count exceeding acceptable limits. "
        "Please try after some time.",
        type=None,
        headers={"Retry-After": str(retry_after)},
    )


SERVER_ERRORS: dict[int, tuple[str, str]] = {
    500: ("internal_error", "Sorry, Something went wrong when trying to process the request."),
    502: ("internal_error", "Sorry, the server received an invalid response from an upstream server."),
    503: ("internal_temporary_error", "Sorry, the server is temporarily unable to handle the request."),
    504: ("gateway_timeout", "The server did not receive a timely response from an upstream server."),
}


def server_error(status: int) -> ApiError:
    code, message = SERVER_ERRORS.get(status, ("internal_error", "Sorry, something went wrong."))
    if status == 429:
        return rate_limited(1)
    return ApiError(status, code, message, type=None)
