"""crmsync: two-way sync between an in-house CRM (Customcrm) and Chargebee on Apache Airflow 3."""

from __future__ import annotations

__version__ = "0.1.0"
