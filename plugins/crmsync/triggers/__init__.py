"""Change detection as Asset watchers: triggers the triggerer runs, one per side and
flow, that update a flow's ``crmsync://<flow>/changes`` Asset when a record changed since
its last sync and not by the sync (:mod:`crmsync.flows.assets` schedules the DAGs on it).

* :mod:`crmsync.triggers.customcrm` polls the flow's list endpoint (``updated_since``);
* :mod:`crmsync.triggers.chargebee` reads ``GET /events``, one poll per site shared by
  every flow in the triggerer process;
* :mod:`crmsync.triggers.decide` is the decision, pure.
"""
