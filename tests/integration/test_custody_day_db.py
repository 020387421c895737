"""Issue 5's first acceptance point, as a user runs it, on SQLite and PostgreSQL:

    fleet simulate --map maps/demo_hospital.yaml --workload controlled-drugs --hours 8 --seed S \\
        --db URL --json

runs a day of controlled-drug traffic through the whole lifecycle (with robot faults and absent
recipients) and leaves its ledger in that database; `fleet custody verify --db URL` exits 0 on
it, and non-zero naming the first bad record after an edit to the ledger.
"""

from __future__ import annotations

import json

import pytest

from fleet.cli import main
from fleet.store.ledger import connect_ledger
from tests.conftest import DEMO_MAP
from tests.integration.test_custody_ledger_db import _tamper


def test_a_simulated_day_leaves_a_verifiable_ledger(
    store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "simulate",
            "--map",
            str(DEMO_MAP),
            "--workload",
            "controlled-drugs",
            "--hours",
            "8",
            "--seed",
            "3",
            "--db",
            store_url,
            "--json",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    report = json.loads(out.strip().splitlines()[-1])
    custody = report["custody"]
    assert custody["cases"] >= 10
    assert custody["cases_closed"] == custody["cases"], custody["cases_by_state"]
    assert custody["refused_steps"] == 0, custody["refused_examples"]
    assert custody["register_balanced"], custody["register_problems"]
    # The exceptions happened: a robot died with drugs on board, a recipient did not come.
    paths = custody["cases_by_path"]
    assert paths.get("fault", 0) >= 1 and paths.get("alternate-received", 0) >= 1, paths
    assert report["conflicts"] == 0 and report["safety_violations"] == 0

    store = connect_ledger(store_url)
    try:
        stored = len(store.events())
    finally:
        store.close()
    assert stored == custody["ledger_events"] > 0

    assert main(["custody", "verify", "--db", store_url]) == 0
    verified = capsys.readouterr().out
    assert f"OK: {stored} records" in verified

    # The register of the simulated day (2026-01-05) balances.
    assert main(["custody", "report", "--db", store_url, "--date", "2026-01-05"]) == 0
    assert "BALANCED" in capsys.readouterr().out

    # Someone changes a quantity in the middle of the day: verify names that record.
    middle = stored // 2
    _tamper(store_url, f"UPDATE custody_events SET quantity = '99' WHERE seq = {middle}")
    assert main(["custody", "verify", "--db", store_url]) != 0
    said = capsys.readouterr()
    assert f"TAMPERED: record {middle}: CONTENT_CHANGED" in said.out + said.err
