"""Shared fixtures of the flow-level unit tests: a link store on a throwaway SQLite file.

Each test module names its flow with its own ``m`` fixture (the mapping file it is about);
``repo`` is that flow's repository on an empty store.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from crmsync.mapping.model import Mapping
from crmsync.store.repository import Repository
from crmsync.store.schema import metadata
from sqlalchemy import create_engine


@pytest.fixture
def repo(tmp_path: Path, m: Mapping) -> Repository:
    engine = create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    metadata.create_all(engine)
    return Repository(engine, m.flow)
