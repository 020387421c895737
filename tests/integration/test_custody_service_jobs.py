"""The custody's recurring work in the service (`fleet serve --custody`, APScheduler jobs):

- the vault's expiry sweep, once at start and then daily, turns lots near or past expiry into
  alerts that the operations centre reads over gRPC (OperationsService.ListAlerts); the demo
  vault holds lot F2609 of fentanyl, expired on 2026-09-30 and blocked from issue;
- with a signing key, a signed checkpoint of the ledger's head at start and then periodically,
  which `fleet custody verify --public-key` checks.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from fleet.bootstrap import Service
from fleet.cli import main
from fleet.config import METRICS_OFF, Settings
from fleet.store.ledger import connect_ledger
from fleet.v1 import operations_pb2, operations_pb2_grpc
from tests.conftest import DEMO_MAP


async def test_an_expired_lot_is_an_alert_for_the_operations_centre(tmp_path: Path) -> None:
    service = Service(
        Settings(
            map_path=DEMO_MAP,
            database_url=f"sqlite:///{tmp_path / 'fleet.db'}",
            grpc_port=0,
            metrics_port=METRICS_OFF,
            log_level="WARNING",
            custody=True,
            custody_fast_pins=True,
        )
    )
    await service.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc_port}")
    try:
        ops = operations_pb2_grpc.OperationsServiceStub(channel)
        found: list[operations_pb2.Alert] = []
        for _ in range(100):
            response = await ops.ListAlerts(operations_pb2.ListAlertsRequest(active_only=True))
            found = [a for a in response.alerts if a.code.startswith("LOT_")]
            if found:
                break
            await asyncio.sleep(0.05)
        expired = [a for a in found if a.code == "LOT_EXPIRED"]
        assert [a.subject for a in expired] == ["86999900000101/F2609"], found
        assert expired[0].severity == operations_pb2.ALERT_SEVERITY_CRITICAL
        assert "expired on 2026-09-30" in expired[0].message
        assert "blocked from issue" in expired[0].message
    finally:
        await channel.close(None)
        await service.stop(grace=0)
    # A service without custody has no vault and no sweep.
    plain = Service(
        Settings(
            map_path=DEMO_MAP,
            database_url=f"sqlite:///{tmp_path / 'plain.db'}",
            grpc_port=0,
            metrics_port=METRICS_OFF,
            log_level="WARNING",
        )
    )
    await plain.start()
    try:
        await asyncio.sleep(0.2)
        assert not [a for a in plain.core.alerts if a.code.startswith("LOT_")]
    finally:
        await plain.stop(grace=0)


async def test_the_service_signs_checkpoints_of_the_ledger(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signing, public = tmp_path / "custody.key", tmp_path / "custody.pub"
    assert main(["custody", "keygen", "--signing-key", str(signing),
                 "--public-key", str(public)]) == 0  # fmt: skip
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    service = Service(
        Settings(
            map_path=DEMO_MAP,
            database_url=url,
            grpc_port=0,
            metrics_port=METRICS_OFF,
            log_level="WARNING",
            custody=True,
            custody_fast_pins=True,
            custody_signing_key=signing,
            custody_checkpoint_min=60.0,
        )
    )
    await service.start()
    try:
        for _ in range(100):  # the first checkpoint is signed at start
            ledger = connect_ledger(url)
            try:
                signed = ledger.checkpoints()
            finally:
                ledger.close()
            if signed:
                break
            await asyncio.sleep(0.05)
        assert len(signed) == 1 and signed[0].seq == 0  # an empty ledger's head
    finally:
        await service.stop(grace=0)
    capsys.readouterr()
    assert main(["custody", "verify", "--db", url, "--public-key", str(public)]) == 0
    assert "1 checkpoints matched" in capsys.readouterr().out


async def test_a_bad_signing_key_stops_the_service_from_starting(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-key.pem"
    bad.write_text("hello\n")
    service = Service(
        Settings(
            map_path=DEMO_MAP,
            database_url=f"sqlite:///{tmp_path / 'fleet.db'}",
            grpc_port=0,
            metrics_port=METRICS_OFF,
            log_level="WARNING",
            custody=True,
            custody_fast_pins=True,
            custody_signing_key=bad,
        )
    )
    with pytest.raises(ValueError, match=r"not-a-key\.pem"):
        await service.start()
