"""Whether a Chargebee ``created_by`` names a person: the one rule every flow shares.

Chargebee's ``created_by`` of an order is, per its API reference:

* the email address of the user who created it in Chargebee's UI (Chargebee's users
  sign in with their email address): a person;
* ``system`` for what Chargebee generated (an order from a paid invoice), ``import``
  for imported records: no person;
* for a record made through the API, the *name of the API key* used. The docs' example
  shows ``full_access_key_v1``, but the site's admins choose key names freely, so
  ``Airflow Sync``, ``billing-bot (prod)`` or any other text is possible: no person.

Because key names are free text, the rule is by shape: a ``created_by`` with an ``@``
is (an attempt at) a person's email address; any other non-blank text names no person.
A site whose key names contain an ``@`` (``billing@acme.example``) lists them in the
Chargebee connection's extra, ``api_key_names`` (see
:class:`crmsync.hooks.chargebee.ChargebeeSettings`); a listed name names no person
whatever its shape. Values are compared as the mapping's ``email`` transform compares
them: Unicode NFC, trimmed, lower case.

Two values are neither, and whoever reads them holds them with a reason instead of
guessing: a blank (or missing, or no text) ``created_by`` and one with control
characters (no email address or key name has them: broken data, for a person to see).
An ``@`` value that is no valid email address (``a@@b``) counts as a person's: the flow
that matches it to a user then holds it as no valid email address, where a person sees
it; a key name of that shape is listed in ``api_key_names``.

Pure: the connection's names are passed in as data (the task puts them on the mapping
it hands the engine, :meth:`crmsync.mapping.model.Mapping.with_api_key_names`).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from typing import Any

#: The Chargebee attribute this rule reads (an order's creator).
CREATED_BY = "created_by"


def normalize_creator(value: Any) -> str | None:
    """``created_by`` as it is compared: NFC, trimmed, lower case; None when blank or no text."""
    if not isinstance(value, str):
        return None
    s = unicodedata.normalize("NFC", value).strip().lower()
    return s or None


def _has_control_chars(s: str) -> bool:
    return any(unicodedata.category(ch) == "Cc" for ch in s)


def api_key_name_problem(name: Any) -> str | None:
    """Why ``name`` cannot be an entry of ``api_key_names``, or None."""
    if not isinstance(name, str):
        return f"{type(name).__name__} is no text; each entry is the name of one API key"
    if not name.strip():
        return "a blank entry names no API key"
    if _has_control_chars(name):
        return "an API key name holds no control characters"
    return None


def normalize_api_key_names(names: Iterable[str]) -> frozenset[str]:
    """The listed names as :func:`names_no_person` compares them."""
    return frozenset(n for n in (normalize_creator(x) for x in names) if n)


def names_no_person(value: Any, api_key_names: frozenset[str] = frozenset()) -> bool:
    """Whether ``created_by`` ``value`` names no person by design: ``system``, ``import``
    or an API key's name (any text without ``@``, or one of the connection's
    ``api_key_names``, already normalized by :func:`normalize_api_key_names`).

    False for a person's email address (or an attempt at one: text with an ``@``), and
    for a blank or control-character value, which the reader holds with its reason.
    """
    s = normalize_creator(value)
    if s is None:
        return False
    if s in api_key_names:
        return True
    if _has_control_chars(s):
        return False
    return "@" not in s
