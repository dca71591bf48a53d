"""Local sandbox servers that stand in for the two remote APIs the sync talks to.

A fresh machine has no Chargebee site and no in-house CRM, yet the main job must run
end to end there. Each sandbox is a real stdlib HTTP server (no extra dependencies)
that behaves like the API it replaces closely enough that pointing a connection at the
real service needs no code change.

* ``sandbox.chargebee`` - Chargebee API v2 (Product Catalog 2.0): ``python -m sandbox.chargebee``.
* ``sandbox.customcrm`` - reference server for the Customcrm contract.
* ``sandbox.common`` - generic pieces both servers share (fault injection, rate limiting,
  atomic JSON persistence, request statistics, an adjustable clock, a threaded HTTP base).
"""
