"""Issue 5's robot-fault case end to end over gRPC: the robot carrying a case from the pharmacy
fails in a corridor with the drugs sealed on board. Custody stays with the sealed compartment
and the pharmacist who loaded it; the operations centre gets a critical alert; a pharmacist and
a second person recover the drugs with a blind count (seal intact, count right: no
discrepancy); the pharmacist calls another robot (CallRobot), loads it under a new seal, and
the case reaches OR 3 and is received. The ledger's chain verifies.

The service runs as `fleet serve --custody` would; two simulated vendor robots on their own
RobotGateway streams (`LiveTwin`); the test plays the people through CustodyService and reads
alerts through OperationsService.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import grpc
import grpc.aio
import pytest

from fleet.bootstrap import Service
from fleet.cli import main
from fleet.config import METRICS_OFF, Settings
from fleet.v1 import custody_pb2, custody_pb2_grpc, operations_pb2, operations_pb2_grpc
from simulators.fast import CLEAN_CLASSES
from simulators.live import LiveTwin
from simulators.robot import RobotSpec
from tests.conftest import DEMO_MAP
from tests.e2e.test_custody_grpc import (
    DROPOFF,
    FENTANYL,
    OR3,
    PHARMACY,
    PICKUP,
    SCALE,
    creds,
    fefo_pick,
    lot_counts,
    wait_for_robot,
    wait_until,
)


async def test_a_robot_failing_with_drugs_on_board_over_grpc(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    service = Service(
        Settings(
            map_path=DEMO_MAP,
            database_url=url,
            grpc_port=0,
            metrics_port=METRICS_OFF,
            time_scale=SCALE,
            solve_time_limit_s=0.5,
            log_level="WARNING",
            custody=True,
            custody_fast_pins=True,
        )
    )
    await service.start()
    target = f"127.0.0.1:{service.grpc_port}"
    clock = service.core.clock
    specs = [
        RobotSpec("AMR-01", CLEAN_CLASSES, "B1-CHARGER-1", compartments=4),
        RobotSpec("AMR-02", CLEAN_CLASSES, "B1-CHARGER-2", compartments=4),
    ]
    twin = LiveTwin(service.core.building, specs, target, clock, SCALE)
    await twin.start()
    channel = grpc.aio.insecure_channel(target)
    stub = custody_pb2_grpc.CustodyServiceStub(channel)
    ops = operations_pb2_grpc.OperationsServiceStub(channel)
    try:
        await wait_until(
            "both robots' hellos",
            lambda: all(
                (run := service.core.robots.get(s.robot_id)) is not None and run.connected
                for s in specs
            ),
        )
        today = datetime.fromtimestamp(clock.now(), UTC).date()
        requested = await stub.Request(
            custody_pb2.RequestCaseRequest(
                requester=creds("an-wang"),
                prescription_no=f"麻精一-{today:%Y%m%d}-0007",
                patient_ref="P-0077",
                case_ref=f"SURG-{today:%Y%m%d}-OR03-007",
                or_station=OR3,
                drug_code=FENTANYL,
                quantity=4,
            ),
            timeout=5,
        )
        case_id = requested.custody_case.id
        await stub.Approve(
            custody_pb2.ApproveRequest(case_id=case_id, pharmacist=creds("ph-chen")), timeout=5
        )
        picked = fefo_pick(FENTANYL, 4, today)
        await stub.Pick(
            custody_pb2.PickRequest(
                case_id=case_id, picker=creds("ph-chen"), scanned=lot_counts(picked)
            ),
            timeout=5,
        )
        await stub.Verify(
            custody_pb2.VerifyRequest(case_id=case_id, verifier=creds("ph-okafor")), timeout=5
        )
        first = (await wait_for_robot(stub, case_id, PICKUP, PHARMACY)).waiting_robot
        await stub.Load(
            custody_pb2.LoadRequest(
                case_id=case_id,
                loader=creds("ph-chen"),
                robot_id=first.robot_id,
                compartment=first.compartment,
                seal_id="SEAL-F-0001",
            ),
            timeout=5,
        )

        # -- on its way, the robot fails with the drugs sealed on board ----------------------
        async def state() -> int:
            case = await stub.GetCase(custody_pb2.GetCaseRequest(case_id=case_id), timeout=5)
            return case.state

        # Out in the basement corridor (a robot dying on the hatch would block the hatch).
        await wait_until(
            "the robot in the corridor with the case",
            lambda: service.core.robots[first.robot_id].robot.node in ("B1-C-03", "B1-C-02"),
        )
        assert await state() == custody_pb2.CASE_STATE_IN_TRANSIT
        twin.robots[first.robot_id].inject_fault("drive motor fault")
        deadline = asyncio.get_running_loop().time() + 20
        while await state() != custody_pb2.CASE_STATE_RECOVERY_PENDING:
            assert asyncio.get_running_loop().time() < deadline, "no fault recorded"
            await asyncio.sleep(0.05)
        case = await stub.GetCase(custody_pb2.GetCaseRequest(case_id=case_id), timeout=5)
        # Custody stays with the sealed compartment, the loading pharmacist answerable.
        assert case.custodian == f"compartment:{first.robot_id}/{first.compartment}"
        assert case.accountable == "ph-chen"

        alerts: list[operations_pb2.Alert] = []
        deadline = asyncio.get_running_loop().time() + 20
        while not alerts:
            assert asyncio.get_running_loop().time() < deadline, "no custody alert"
            listed = await ops.ListAlerts(operations_pb2.ListAlertsRequest(active_only=True))
            alerts = [a for a in listed.alerts if a.code == "CUSTODY_ROBOT_FAULT"]
            await asyncio.sleep(0.05)
        assert alerts[0].severity == operations_pb2.ALERT_SEVERITY_CRITICAL
        assert alerts[0].subject == case_id and first.robot_id in alerts[0].message

        # -- two people recover it: seal intact, count right ----------------------------------
        recovered = await stub.Recover(
            custody_pb2.RecoverRequest(
                case_id=case_id,
                pharmacist=creds("ph-okafor"),
                second=creds("log-novak"),
                seal_intact=True,
                seal_id_seen="SEAL-F-0001",
                blind_count=lot_counts(picked),
            ),
            timeout=5,
        )
        assert recovered.custody_case.state == custody_pb2.CASE_STATE_RECOVERED
        assert not recovered.opened
        # Only the pharmacist now holding the drugs may call a robot for them.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.CallRobot(
                custody_pb2.CallRobotRequest(case_id=case_id, caller=creds("ph-chen")),
                timeout=5,
            )
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        await stub.CallRobot(
            custody_pb2.CallRobotRequest(case_id=case_id, caller=creds("ph-okafor")), timeout=5
        )

        # -- the other robot takes it to OR 3 ------------------------------------------------
        second = (await wait_for_robot(stub, case_id, PICKUP, PHARMACY)).waiting_robot
        assert second.robot_id != first.robot_id
        await stub.Load(
            custody_pb2.LoadRequest(
                case_id=case_id,
                loader=creds("ph-okafor"),
                robot_id=second.robot_id,
                compartment=second.compartment,
                seal_id="SEAL-F-0002",
            ),
            timeout=5,
        )
        await wait_for_robot(stub, case_id, DROPOFF, OR3)
        await stub.OpenCompartment(
            custody_pb2.OpenCompartmentRequest(case_id=case_id, recipient=creds("an-wang")),
            timeout=5,
        )
        received = await stub.Receive(
            custody_pb2.ReceiveRequest(
                case_id=case_id,
                recipient=creds("an-wang"),
                blind_count=lot_counts(picked),
                seal_id_seen="SEAL-F-0002",
            ),
            timeout=5,
        )
        assert received.custody_case.state == custody_pb2.CASE_STATE_RECEIVED
        assert not received.opened
        (account,) = received.custody_case.lots
        assert (account.issued, account.held) == (4, 4)  # every unit, now with the recipient
    finally:
        await channel.close(None)
        await twin.stop()
        await service.stop(grace=0.2)

    assert twin.world.conflicts == 0 and twin.world.violations == []
    capsys.readouterr()
    assert main(["custody", "verify", "--db", url]) == 0, capsys.readouterr().err
