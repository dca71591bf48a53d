"""README's "Where things happen" names every module of the package.

Issue 13 asked that the map match the house; this keeps it so: a module added without its
one line in the map fails here, naming the module.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "plugins" / "crmsync"


def _map() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("## Where things happen")
    end = readme.index("\n## ", start + 1)
    return readme[start:end]


def _modules() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if path.name == "__init__.py" or rel.parts[:2] == ("store", "migrations"):
            continue  # package markers; alembic's env and revisions sit under the map's "migrations/"
        found.append(rel.as_posix())
    return found


@pytest.mark.parametrize("module", _modules())
def test_every_module_has_its_line_in_the_map(module: str) -> None:
    section = _map()
    folder, _, name = module.rpartition("/")
    # A line names the file under its folder's heading, or the folder's line lists it.
    assert name in section, f"README 'Where things happen' has no line for plugins/crmsync/{module}: add one"
    if folder:
        assert f"{folder.split('/')[-1]}/" in section


def test_the_map_names_no_module_that_is_gone() -> None:
    section = _map()
    names = {Path(m).name for m in _modules()}
    listed = {
        word.rstrip(",")
        for line in section.splitlines()
        if line.startswith("    ") and not line.startswith("     ")
        for word in line.split()[:1]
        if word.endswith(".py")
    }
    assert listed <= names, f"README lists modules that do not exist: {sorted(listed - names)}"
