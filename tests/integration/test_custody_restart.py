"""`fleet serve --custody` keeps the custody book's working state across a restart, on SQLite and
PostgreSQL: a case driven over gRPC to VERIFIED is the same case after the service restarts on
the same database (state, lots, history, its robot order), the vault balance is the one after the
pick (not the opening stock file), case ids are never reused, the case goes on, and the ledger
verifies. A saved state behind the ledger (a crash between a step's ledger commit and its save)
raises a CRITICAL alert naming the records and the case."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc.aio
import pytest

from fleet.bootstrap import Service
from fleet.cli import main
from fleet.config import METRICS_OFF, Settings
from fleet.dispatch import messages as m
from fleet.store.custody_state import open_custody_state
from fleet.v1 import custody_pb2, custody_pb2_grpc
from tests.conftest import DEMO_MAP
from tests.e2e.test_custody_grpc import FENTANYL, OR3, creds, fefo_pick, lot_counts


def settings(url: str, **kw: Any) -> Settings:
    return Settings(
        map_path=DEMO_MAP,
        database_url=url,
        grpc_port=0,
        metrics_port=METRICS_OFF,
        log_level="WARNING",
        custody=True,
        custody_fast_pins=True,
        **kw,
    )


class Running:
    """A started service and a CustodyService client on it."""

    def __init__(self, url: str) -> None:
        self.service = Service(settings(url))

    async def __aenter__(self) -> Running:
        await self.service.start()
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.service.grpc_port}")
        self.stub = custody_pb2_grpc.CustodyServiceStub(self.channel)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.channel.close(None)
        await self.service.stop(grace=0)

    @property
    def today(self) -> Any:
        return datetime.fromtimestamp(self.service.core.clock.now(), UTC).date()

    async def request(self, patient: str = "P-0042") -> str:
        response = await self.stub.Request(
            custody_pb2.RequestCaseRequest(
                requester=creds("an-wang"),
                prescription_no=f"麻精一-{self.today:%Y%m%d}-0003",
                patient_ref=patient,
                case_ref=f"SURG-{self.today:%Y%m%d}-OR03-001",
                or_station=OR3,
                drug_code=FENTANYL,
                quantity=5,
                alternates=["an-garcia"],
            ),
            timeout=5,
        )
        return str(response.custody_case.id)

    async def approve(self, case_id: str) -> None:
        await self.stub.Approve(
            custody_pb2.ApproveRequest(case_id=case_id, pharmacist=creds("ph-chen")), timeout=5
        )

    async def pick(self, case_id: str) -> dict[str, int]:
        picked = fefo_pick(FENTANYL, 5, self.today)
        await self.stub.Pick(
            custody_pb2.PickRequest(
                case_id=case_id, picker=creds("ph-chen"), scanned=lot_counts(picked)
            ),
            timeout=5,
        )
        return picked

    async def get(self, case_id: str) -> custody_pb2.CustodyCase:
        return await self.stub.GetCase(custody_pb2.GetCaseRequest(case_id=case_id), timeout=5)

    def stock(self, lot: str) -> tuple[int, int, int]:
        desk = self.service.custody_desk
        assert desk is not None
        s = desk.book.stock.lot(FENTANYL, lot)
        return s.on_hand, s.picked, s.returned

    def custody_alerts(self) -> list[Any]:
        return [a for a in self.service.core.alerts if a.code.startswith("CUSTODY_")]


async def test_a_verified_case_survives_a_restart_and_goes_on(store_url: str) -> None:
    async with Running(store_url) as first:
        case_id = await first.request()
        await first.approve(case_id)
        picked = await first.pick(case_id)
        verified = await first.stub.Verify(
            custody_pb2.VerifyRequest(case_id=case_id, verifier=creds("ph-okafor")), timeout=5
        )
        assert verified.custody_case.state == custody_pb2.CASE_STATE_VERIFIED
        waiting = await first.request(patient="P-0043")  # a second case, only requested
        before = await first.get(case_id)
        (lot,) = picked
        opening = first.stock(lot)
        assert opening[1:] == (5, 0)
        desk = first.service.custody_desk
        assert desk is not None
        trip = desk.trip_of(case_id)
        assert trip is not None  # Verify called a robot: the case's order
        order_id = trip.order_id

    async with Running(store_url) as second:
        assert second.custody_alerts() == []
        after = await second.get(case_id)
        assert after == before  # state, lots, custodian, history and all
        assert after.state == custody_pb2.CASE_STATE_VERIFIED
        assert len(after.history) == 4
        assert (await second.get(waiting)).state == custody_pb2.CASE_STATE_REQUESTED
        # The vault as the pick left it, not as the opening stock file has it.
        assert second.stock(lot) == opening
        # The desk knows the case's order again (rebuilt from the fleet's orders).
        desk = second.service.custody_desk
        assert desk is not None
        trip = desk.trip_of(case_id)
        assert trip is not None and trip.order_id == order_id and not trip.done
        assert order_id in second.service.core.orders
        # A new case gets a new id.
        new = await second.request(patient="P-0044")
        assert new not in (case_id, waiting)
        assert int(new.rsplit("-", 1)[1]) == 3
        # The case goes on: the pharmacy takes the picked units back (put back by hand).
        back = await second.stub.ReturnReceive(
            custody_pb2.ReturnReceiveRequest(
                case_id=case_id,
                pharmacist=creds("ph-chen"),
                witness=creds("ph-okafor"),
                blind_count_unused=lot_counts(picked),
            ),
            timeout=5,
        )
        assert back.custody_case.state == custody_pb2.CASE_STATE_CLOSED
        assert second.stock(lot) == (opening[0] + 5, 5, 5)
        await second.stub.Cancel(
            custody_pb2.CancelRequest(case_id=waiting, actor=creds("an-wang"), reason="postponed"),
            timeout=5,
        )

    # And once more: the closed case, the cancelled one and the stock are as they were left.
    async with Running(store_url) as third:
        assert (await third.get(case_id)).state == custody_pb2.CASE_STATE_CLOSED
        assert (await third.get(waiting)).state == custody_pb2.CASE_STATE_CANCELLED
        assert (await third.get(new)).state == custody_pb2.CASE_STATE_REQUESTED
        assert third.stock(lot) == (opening[0] + 5, 5, 5)
        assert third.custody_alerts() == []
    assert main(["custody", "verify", "--db", store_url]) == 0


async def test_a_state_behind_the_ledger_raises_a_critical_alert(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    async with Running(url) as first:
        case_id = await first.request()
        await first.approve(case_id)
    states = open_custody_state(url)
    try:
        approved = states.load()
        assert approved is not None
    finally:
        states.close()
    async with Running(url) as second:
        await second.pick(case_id)  # ISSUE on the ledger, and the state saved with it
    # A crash between the pick's ledger commit and its save: the state is the approved one.
    states = open_custody_state(url)
    try:
        states.save(approved["rows"], approved["meta"])
    finally:
        states.close()
    async with Running(url) as third:
        alerts = third.custody_alerts()
        assert [(a.code, a.severity) for a in alerts] == [
            ("CUSTODY_STATE_BEHIND_LEDGER", m.AlertSeverity.CRITICAL)
        ]
        assert f"check case(s) {case_id}" in alerts[0].message
        assert "ledger records 1..1" in alerts[0].message and "ISSUE" in alerts[0].message
        # Nothing is guessed: the book is the saved one (APPROVED), the ledger is untouched.
        assert (await third.get(case_id)).state == custody_pb2.CASE_STATE_APPROVED
    assert main(["custody", "verify", "--db", url]) == 0


async def test_a_saved_case_whose_drug_left_the_catalogue_stops_the_start(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    async with Running(url) as first:
        case_id = await first.request()
    states = open_custody_state(url)
    try:
        saved = states.load()
        assert saved is not None
        row = saved["rows"][f"case:{case_id}"]
        row["case"]["drug_code"] = "00000000000000"
        states.save({f"case:{case_id}": row}, saved["meta"])
    finally:
        states.close()
    service = Service(settings(url))
    with pytest.raises(ValueError, match=f"case {case_id} names drug 00000000000000"):
        await service.start()
