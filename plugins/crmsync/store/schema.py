"""The link store's tables, in the same database as Airflow's metadata.

SQLAlchemy Core only: task code reaches these tables through an ordinary Airflow
Connection (never Airflow's ORM session, which a real Airflow 3 worker forbids).
Every name starts with ``crmsync_`` so nothing collides with Airflow's own tables.

The migrations in ``store/migrations`` must build exactly these tables: Airflow creates
a fresh database from this metadata and stamps it at head, and upgrades an existing one
with the revisions (a test compares the two).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

metadata = MetaData()

ID = String(255)
FLOW = String(100)
RUN = String(250)

#: One row per linked pair. ``crm_slot`` is '' for one-to-one flows, so (flow, crm_id,
#: crm_slot) makes a Customcrm record linkable once; a one-to-many flow (a user owns
#: many orders) stores the Chargebee id there. Both uniqueness rules live in the
#: database, so concurrent runs cannot create a second link for a record.
link = Table(
    "crmsync_link",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("flow", FLOW, nullable=False),
    Column("crm_id", ID, nullable=False),
    Column("crm_slot", ID, nullable=False, default=""),
    Column("cb_id", ID, nullable=False),
    Column("match_key", String(512), nullable=True),
    Column("base", Text, nullable=False),  # canonical snapshot both sides agreed on (JSON)
    Column("crm_snapshot", Text, nullable=False),  # last canonical seen/written in Customcrm
    Column("cb_snapshot", Text, nullable=False),  # last canonical seen/written in Chargebee
    Column("base_hash", String(64), nullable=False),
    Column("crm_version", String(64), nullable=True),
    Column("cb_version", String(64), nullable=True),
    Column("crm_updated_at", Float, nullable=False, default=0.0),
    Column("cb_updated_at", Float, nullable=False, default=0.0),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("synced_at", DateTime(timezone=True), nullable=False),
    Column("last_run_id", RUN, nullable=True),
    UniqueConstraint("flow", "cb_id", name="uq_crmsync_link_cb"),
    UniqueConstraint("flow", "crm_id", "crm_slot", name="uq_crmsync_link_crm"),
    Index("ix_crmsync_link_match", "flow", "match_key"),
)

#: Per flow and side: records updated before ``value`` (Unix seconds) are handled.
watermark = Table(
    "crmsync_watermark",
    metadata,
    Column("flow", FLOW, primary_key=True),
    Column("side", String(16), primary_key=True),
    Column("value", Float, nullable=False),
    Column("run_id", RUN, nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

#: What extract read in one run; purged when the run's links are updated.
staging = Table(
    "crmsync_staging",
    metadata,
    Column("run_id", RUN, primary_key=True),
    Column("flow", FLOW, primary_key=True),
    Column("side", String(16), primary_key=True),
    Column("record_id", ID, primary_key=True),
    Column("match_key", String(512), nullable=True),
    Column("updated_at", Float, nullable=False, default=0.0),
    Column("version", String(64), nullable=True),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("external_ref", ID, nullable=True),
    Column("canonical", Text, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Index("ix_crmsync_staging_match", "run_id", "flow", "match_key"),
)

#: One decision per record pair and run. Each side's write has its own status so the
#: two upsert tasks can run, fail and be rerun independently.
plan = Table(
    "crmsync_plan",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", RUN, nullable=False),
    Column("flow", FLOW, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("action", String(32), nullable=False),
    Column("crm_id", ID, nullable=True),
    Column("cb_id", ID, nullable=True),
    Column("link_id", Integer, nullable=True),
    Column("match_key", String(512), nullable=True),
    Column("merged", Text, nullable=True),
    Column("crm_staged", Text, nullable=True),  # the staged SideRecord of each side (JSON)
    Column("cb_staged", Text, nullable=True),
    Column("crm_op", String(16), nullable=True),
    Column("crm_changes", Text, nullable=True),
    Column("crm_if_version", String(64), nullable=True),
    # pending | in_flight | done | stale | rejected | failed | skipped
    Column("crm_status", String(16), nullable=True),
    Column("crm_result", Text, nullable=True),
    Column("crm_error", Text, nullable=True),
    Column("cb_op", String(16), nullable=True),
    Column("cb_changes", Text, nullable=True),
    Column("cb_if_version", String(64), nullable=True),
    Column("cb_status", String(16), nullable=True),
    Column("cb_result", Text, nullable=True),
    Column("cb_error", Text, nullable=True),
    Column("reason", Text, nullable=True),
    Column("detail", Text, nullable=True),  # conflicts and notes (JSON)
    Column("held_side", String(16), nullable=True),
    Column("hold_kind", String(16), nullable=True),
    Column("applied", Boolean, nullable=False, default=False),  # turned into links
    UniqueConstraint("run_id", "flow", "seq", name="uq_crmsync_plan_seq"),
    Index("ix_crmsync_plan_run", "run_id", "flow", "action"),
)

#: Records that could not be synced: the reason a person reads, and what a retry needs.
quarantine = Table(
    "crmsync_quarantine",
    metadata,
    Column("flow", FLOW, primary_key=True),
    Column("side", String(16), primary_key=True),
    Column("record_id", ID, primary_key=True),
    Column("kind", String(16), nullable=False),  # invalid | ambiguous | waiting | rejected | failed
    Column("reason", Text, nullable=False),
    Column("attempts", Integer, nullable=False, default=1),
    Column("staged", Text, nullable=True),  # the staged record, so a retry needs no API call
    Column("content_hash", String(64), nullable=True),
    Column("first_seen", DateTime(timezone=True), nullable=False),
    Column("last_seen", DateTime(timezone=True), nullable=False),
    Column("run_id", RUN, nullable=True),
    # an operator asked (Sync page) that the next run retries the held copy, whatever the kind
    Column("retry_requested", Boolean, nullable=False, default=False, server_default=false()),
)

#: Conflicts, deletes and reverted edits: what the sync decided on a person's behalf.
audit = Table(
    "crmsync_audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("flow", FLOW, nullable=False),
    Column("run_id", RUN, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("crm_id", ID, nullable=True),
    Column("cb_id", ID, nullable=True),
    Column("field", String(100), nullable=True),
    Column("detail", Text, nullable=False),  # JSON
    Index("ix_crmsync_audit_flow", "flow", "run_id"),
)

#: One row per flow run: watermarks to commit, params, status and the summary.
run = Table(
    "crmsync_run",
    metadata,
    Column("run_id", RUN, primary_key=True),
    Column("flow", FLOW, primary_key=True),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("status", String(16), nullable=False),  # running | planned | finished
    Column("crm_next_watermark", Float, nullable=True),
    Column("cb_next_watermark", Float, nullable=True),
    Column("params", Text, nullable=True),
    Column("summary", Text, nullable=True),
)

#: The request budget every worker process shares per API site (Chargebee allows N
#: requests a minute per site, whatever the number of flows and workers): one row per
#: site and time bucket counting the requests leased in it, and a control row
#: (``bucket_end_ms = 0``) holding ``blocked_until`` after a 429, which also serialises
#: the leases of a site. See :mod:`crmsync.store.rate_budget`.
rate_budget = Table(
    "crmsync_rate_budget",
    metadata,
    Column("site", String(255), primary_key=True),
    Column("bucket_end_ms", BigInteger, primary_key=True, autoincrement=False),  # epoch ms; 0 = control
    Column("used", Integer, nullable=False, default=0),
    Column("blocked_until", Float, nullable=True),  # epoch seconds, control row only
)

TABLES = (link, watermark, staging, plan, quarantine, audit, run, rate_budget)
VERSION_TABLE = "crmsync_alembic_version"
