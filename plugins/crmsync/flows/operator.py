"""The one operator of a flow DAG: a typed step of the sync, run by :func:`run_step`.

Every task of a flow is a :class:`SyncStepOperator` with its :class:`Step` and, for the
steps that talk to one API, its :class:`~crmsync.mapping.model.Side`. The operator holds
the mapping file's path (not the mapping: a worker re-reads it, so a DAG file parses
without validating anything twice) and returns nothing: no data goes through XCom.

Cheap to import (the DAG file imports it): the step's code, hooks and SQLAlchemy are
imported when the task runs.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from crmsync.mapping.model import Side

if TYPE_CHECKING:
    from airflow.sdk import Context


class Step(StrEnum):
    """What a task of a flow does (:func:`crmsync.flows.tasks.run_step` runs each one's module)."""

    EXTRACT = "extract"  # stage what changed on one side since its watermark
    TRANSFORM = "transform"  # match, merge, plan
    UPSERT = "upsert"  # execute the plan's writes on one side
    UPDATE_LINKS = "update_links"  # links, quarantine, audit, watermarks, the summary
    PUBLISH_LINKS = "publish_links"  # tell the flows that depend on this one (its Asset)


#: the steps that talk to one side's API
SIDED = frozenset({Step.EXTRACT, Step.UPSERT})


class SyncStepOperator(BaseOperator):
    """One step of one flow (see :class:`Step`)."""

    ui_color = "#e8f0fe"

    def __init__(self, *, step: Step, mapping_file: str, side: Side | None = None, **kwargs: Any) -> None:
        if (step in SIDED) != (side is not None):
            raise ValueError(f"step {step.value} {'needs' if step in SIDED else 'takes no'} side")
        super().__init__(**kwargs)
        self.step = step
        self.mapping_file = mapping_file
        self.side = side

    def execute(self, context: Context) -> None:
        from crmsync.flows.tasks import run_step

        run_step(self.step, self.mapping_file, self.side, **context)


__all__ = ["SIDED", "Step", "SyncStepOperator"]
