from __future__ import annotations

from pathlib import Path

import pytest
from crmsync.mapping.model import Mapping, load_mapping

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def contact_mapping() -> Mapping:
    return load_mapping(ROOT / "include" / "mappings" / "contact_customer.yaml")
