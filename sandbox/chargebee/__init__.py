"""Chargebee API v2 sandbox (Product Catalog 2.0) - see ``docs/contracts.md`` section 1.

Run it with ``python -m sandbox.chargebee`` (``--help`` for options) or, in tests::

    from sandbox.chargebee import running_sandbox
    with running_sandbox(tmp_path / "cb.json") as (server, base_url):
        ...  # API at base_url + "/api/v2", admin at base_url + "/_sandbox/..."
"""

from sandbox.chargebee.server import (
    ChargebeeSandboxServer,
    create_server,
    load_seed,
    running_sandbox,
    serve_in_thread,
)

__all__ = ["ChargebeeSandboxServer", "create_server", "load_seed", "running_sandbox", "serve_in_thread"]
