"""Customcrm reference server: the in-house CRM contract (``openapi.yaml``) made runnable.

Run it with ``python -m sandbox.customcrm``; embed it in tests with
``sandbox.customcrm.server.serve_in_thread``.
"""
