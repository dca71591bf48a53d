"""The sandbox connections live in the metadata DB, where the UI lists and edits them (issue 14, item 3).

Against a throwaway AIRFLOW_HOME (SQLite) and the environment ``scripts/env.sh`` gives:
the connection step that ``make migrate`` runs creates ``chargebee_default`` and
``customcrm_default``; ``airflow connections get`` shows them; an edit (as an operator
makes in the UI: here through the CLI's import, which writes the same row) survives the
step being run again; and a flow's tasks resolve the edited DB connection when no
environment variable is set (nothing silently overrides it).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
SEEDS = ROOT / "sandbox" / "seed"
PY = sys.executable

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    """Both sandboxes on free loopback ports: (chargebee, customcrm)."""
    from sandbox.chargebee.server import serve_in_thread as serve_cb
    from sandbox.customcrm.server import serve_in_thread as serve_crm

    tmp = tmp_path_factory.mktemp("sandboxes")
    with ExitStack() as stack:
        _, cb_url = stack.enter_context(serve_cb(tmp / "cb.json", port=0, seed_path=SEEDS / "chargebee.json"))
        _, crm_url = stack.enter_context(
            serve_crm(tmp / "crm.json", port=0, seed_path=SEEDS / "customcrm.json")
        )
        yield int(urlsplit(cb_url).port or 0), int(urlsplit(crm_url).port or 0)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, ports: tuple[int, int]) -> dict[str, str]:
    """A fresh AIRFLOW_HOME, migrated; the environment every command below runs in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CRMSYNC_"))}
    env.update(
        AIRFLOW_HOME=str(tmp_path_factory.mktemp("airflow-home")),
        CRMSYNC_ROOT=str(ROOT),
        CRMSYNC_DB="sqlite",
        CRMSYNC_PYTHON=PY,
        CRMSYNC_TASK_RETRIES="0",
        SANDBOX_CHARGEBEE_PORT=str(ports[0]),
        SANDBOX_CUSTOMCRM_PORT=str(ports[1]),
        PATH=f"{Path(PY).parent}:{env.get('PATH', '')}",
    )
    out = _sh(env, "airflow db migrate")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return env


def _sh(env: dict[str, str], command: str) -> subprocess.CompletedProcess[str]:
    """``command`` in bash after ``source scripts/env.sh``, as every make target runs."""
    return subprocess.run(
        ["bash", "-c", f"source scripts/env.sh && {command}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _migrate_recipe() -> str:
    text = (ROOT / "Makefile").read_text()
    match = re.search(r"^migrate:.*\n((?:\t.*\n)+)", text, re.M)
    assert match, "Makefile has no migrate target"
    return match.group(1).strip().replace("$(ENV)", "true").replace("$(PY)", PY).replace("$$", "$")


def _get(env: dict[str, str], conn_id: str) -> dict[str, object]:
    out = _sh(env, f"airflow connections get {conn_id} -o json")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("["))
    return dict(json.loads(line)[0])


def test_env_sh_no_longer_exports_the_api_connections(home: dict[str, str]) -> None:
    out = _sh(home, "env")
    assert "AIRFLOW_CONN_CHARGEBEE_DEFAULT" not in out.stdout
    assert "AIRFLOW_CONN_CUSTOMCRM_DEFAULT" not in out.stdout
    # the store's connection is still derived: it is the metadata DB itself
    assert "AIRFLOW_CONN_CRMSYNC_STORE=" in out.stdout
    # one the user exports is kept (and wins over the DB's)
    mine = '{"conn_type":"chargebee","host":"acme-test"}'
    out = _sh({**home, "AIRFLOW_CONN_CHARGEBEE_DEFAULT": mine}, "echo $AIRFLOW_CONN_CHARGEBEE_DEFAULT")
    assert out.stdout.strip() == mine


def test_step_creates_then_never_overwrites_and_tasks_use_the_db(
    home: dict[str, str], ports: tuple[int, int]
) -> None:
    # the Makefile's own recipe (migrate again, then the connection step)
    out = _sh(home, _migrate_recipe())
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "chargebee_default created" in out.stdout and "customcrm_default created" in out.stdout
    cb, crm = _get(home, "chargebee_default"), _get(home, "customcrm_default")
    assert cb["conn_type"] == "chargebee" and crm["conn_type"] == "customcrm"
    assert f"127.0.0.1:{ports[0]}/api/v2" in str(cb["extra_dejson"])
    assert crm["host"] == f"http://127.0.0.1:{ports[1]}"

    # an operator edits chargebee_default (a key the sandbox refuses, to see who reads it)
    edited = {
        "chargebee_default": {
            "conn_type": "chargebee",
            "host": "sandbox",
            "password": "edited_key_never_shown",
            "extra": json.dumps({"base_url": f"http://127.0.0.1:{ports[0]}/api/v2", "max_attempts": 1}),
        }
    }
    path = Path(home["AIRFLOW_HOME"]) / "edited.json"
    path.write_text(json.dumps(edited))
    out = _sh(home, f"airflow connections import --overwrite {path}")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]

    out = _sh(home, f"{PY} scripts/sandbox_connections.py")
    assert out.returncode == 0 and "chargebee_default already in the metadata DB" in out.stdout, out.stdout
    assert _get(home, "chargebee_default")["password"] == "edited_key_never_shown"

    # a flow resolves the DB's connections (no AIRFLOW_CONN_* set): Customcrm's reads work,
    # Chargebee's use the edited key, which the sandbox refuses, and the failure names it
    out = _sh(home, f"{PY} scripts/run_flows.py --flow contact_customer")
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
    record = json.loads(out.stdout.strip().splitlines()[-1])
    failed = {f["task"]: f for f in record["failures"]}
    assert "extract_chargebee" in failed, record
    assert "chargebee_default" in failed["extract_chargebee"]["cause"], failed
    assert "HTTP 401" in failed["extract_chargebee"]["cause"], failed
    assert "extract_customcrm=failed" not in record["failed_tasks"], record
    assert "edited_key_never_shown" not in out.stdout + out.stderr
