"""Package and DAG code must not use Airflow's ORM: a real Airflow 3 worker forbids it.

``dag.test()`` does not enforce the ban, so this static check (plus the scheduler
end-to-end test) is what catches a regression.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN_MODULES = ("airflow.settings", "airflow.models", "airflow.utils.session", "airflow.utils.db")
#: the one module allowed to touch Airflow's DB-manager interface (runs in `airflow db migrate`,
#: never in a task); runner.py drives dag.test() from the CLI, never from a task.
ALLOWED = {"plugins/crmsync/store/db_manager.py"}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
            names += [f"{node.module}.{a.name}" for a in node.names]
    return names


def test_no_orm_imports_in_package_or_dags() -> None:
    offenders = []
    for folder in ("plugins", "dags"):
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            if rel in ALLOWED:
                continue
            for name in _imports(path):
                if name.startswith(FORBIDDEN_MODULES):
                    offenders.append(f"{rel}: {name}")
    assert not offenders, "Airflow ORM used in task/DAG code:\n" + "\n".join(offenders)


def test_the_check_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from airflow.settings import Session\nfrom airflow.models import DagRun\n")
    assert any(n.startswith(FORBIDDEN_MODULES) for n in _imports(bad))
