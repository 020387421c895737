"""The custody book's working state as JSON (fleet.custody.state): `restore(export(book))` is
the same book, after every step of every path through the lifecycle, and a book restored after
every single step goes on exactly as the one that never stopped (same cases, stock and ledger
events). Bad stored states are refused naming the place."""

from __future__ import annotations

import dataclasses
import itertools
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import fleet.custody.ledger
from fleet.custody.catalogue import Catalogue
from fleet.custody.discrepancy import Discrepancy, DiscrepancyState, Resolution
from fleet.custody.lifecycle import (
    CaseState,
    CustodyBook,
    CustodyCase,
    HistoryEntry,
    LifecycleSettings,
    LotAccount,
    OpenGrant,
)
from fleet.custody.state import (
    CustodyStateError,
    decode_case,
    dumps,
    encode_case,
    encode_discrepancy,
    join_state,
    split_state,
)
from fleet.custody.stock import VaultStock
from tests.unit.test_custody_lifecycle import (
    FENTANYL,
    STEP_CALLS,
    World,
    _walk_every_path,
)

SETTINGS = LifecycleSettings(recipient_timeout_s=60, alt_timeout_s=60)
STEPS = {*STEP_CALLS, "request", "resolve", "approve_resolution", "reject_resolution"}


class Ids:
    """Event ids from a counter, so two runs of the same steps write identical events."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.counter = itertools.count(1)

    def __call__(self) -> uuid.UUID:
        return uuid.UUID(int=next(self.counter))


@pytest.fixture
def fixed_ids(monkeypatch: pytest.MonkeyPatch) -> Iterator[Ids]:
    ids = Ids()
    monkeypatch.setattr(fleet.custody.ledger.uuid, "uuid4", ids)
    yield ids


def round_trip(book: CustodyBook) -> CustodyBook:
    """The book exported, through JSON text, and restored on the same sources."""
    state = book.export_state()
    text = dumps(state)
    restored = CustodyBook.restore(
        json.loads(text), book.catalogue, book.directory, book.ledger, settings=book.settings
    )
    assert restored.cases() == book.cases()
    assert restored.stock.snapshot() == book.stock.snapshot()
    assert restored.open_discrepancies() == book.open_discrepancies()
    assert restored._discrepancy_case == book._discrepancy_case
    assert restored._next == book._next
    assert dumps(restored.export_state()) == text
    # Through the store's rows as well.
    rows, meta = split_state(json.loads(text))
    assert join_state({**meta, "ledger_seq": 9}, rows) == state
    return restored


class RestartingWorld(World):
    """After every step the book is exported and replaced by a restored copy: the world goes on
    with the copy, as a restarted dispatcher would."""

    def __init__(self) -> None:
        super().__init__(SETTINGS)
        self.restores = 0
        world = self

        class Current:
            def __getattr__(self, name: str) -> Any:
                if name not in STEPS:
                    return getattr(world.real_book, name)

                def call(*args: Any, **kwargs: Any) -> Any:
                    # The book of the moment of the call: `w.book.reject(new(), ...)` looks the
                    # method up before `new()` restarts the book.
                    result = getattr(world.real_book, name)(*args, **kwargs)
                    world.restart()
                    return result

                return call

        self.book = Current()  # type: ignore[assignment]

    def restart(self) -> None:
        self.real_book = round_trip(self.real_book)
        self.stock = self.real_book.stock
        self.restores += 1


def test_every_path_round_trips_after_every_step_and_goes_on_identically(
    fixed_ids: Ids,
) -> None:
    plain = World(SETTINGS)
    cids = _walk_every_path(plain)
    # The same steps again, with every step's book thrown away and restored from its state.
    fixed_ids.reset()
    w = RestartingWorld()
    assert _walk_every_path(w) == cids
    assert w.restores > 150
    assert w.ledger.events == plain.ledger.events
    assert w.real_book.cases() == plain.book.cases()
    assert w.stock.snapshot() == plain.stock.snapshot()
    # Every state was seen on the way (the walk takes every transition of the table).
    seen = {h.state for c in w.real_book.cases() for h in c.history}
    assert seen == set(CaseState)


def test_open_discrepancies_proposals_and_grants_survive(fixed_ids: Ids) -> None:
    def scenario(w: World, restart: bool) -> list[CustodyCase]:
        def maybe() -> None:
            if restart:
                w.book = w.real_book = round_trip(w.real_book)
                w.stock = w.book.stock

        cid = w.request(quantity=5)
        w.approve(cid)
        w.pick(cid)
        w.verify(cid)
        w.load(cid, "ph1")
        w.travel(cid)
        w.book.open_for_recipient(cid, w.auth("an1"), now=w.tick(5))
        maybe()  # a live grant
        assert w.book.case(cid).grant is not None
        w.fault_and_start_recovery(cid)
        r = w.recover(cid, seal_intact=False, counts={"F2506": 4})
        (d,) = r.opened
        maybe()  # an open discrepancy
        w.book.resolve(d.id, w.auth("ph2"), w.auth("ph3"), "LOSS", "not found", now=w.tick())
        w.book.reject_resolution(d.id, w.auth("ph1"), "look again", now=w.tick())
        maybe()  # a rejected proposal
        w.book.resolve(d.id, w.auth("ph2"), w.auth("ph3"), "FOUND", "under the tray", now=w.tick())
        maybe()  # a proposal awaiting approval
        assert w.book.discrepancy(d.id).state is DiscrepancyState.PROPOSED
        assert len(w.book.discrepancy(d.id).rejected) == 1
        w.book.approve_resolution(d.id, w.auth("ph1"), now=w.tick())
        maybe()
        w.return_receive(cid, "ph2", "ph3")
        other = w.request(drug_code="86999900000909", quantity=3)  # a tablet drug
        maybe()
        w.approve(other)
        return w.book.cases()

    plain = World()
    expected = scenario(plain, restart=False)
    fixed_ids.reset()
    w = World()
    assert scenario(w, restart=True) == expected
    assert w.ledger.events == plain.ledger.events
    assert [c.id for c in expected] == ["CD-000001", "CD-000002"]
    assert expected[0].state is CaseState.CLOSED


def test_the_codec_covers_every_field() -> None:
    w = World()
    cid = w.request()
    case = w.book.case(cid)
    assert set(encode_case(case)) == {f.name for f in dataclasses.fields(CustodyCase)}
    for cls in (LotAccount, OpenGrant, HistoryEntry, Discrepancy, Resolution):
        assert dataclasses.is_dataclass(cls)
    d = Discrepancy(
        "X-D1", "X", "recover", FENTANYL.code, "F2506", None, "ampoule", False, 5, 4,
        ("counted 4",), "person:ph2", 1.5, "e1",
    )  # fmt: skip
    assert set(encode_discrepancy(d)) == {f.name for f in dataclasses.fields(Discrepancy)}
    assert decode_case(json.loads(dumps(encode_case(case)))) == case


def test_bad_states_are_refused_naming_the_place() -> None:
    w = World()
    cid = w.request()
    w.approve(cid)
    w.pick(cid)
    state = json.loads(dumps(w.book.export_state()))

    def restore(s: dict[str, Any], catalogue: Catalogue | None = None) -> CustodyBook:
        return CustodyBook.restore(s, catalogue or w.catalogue, w.directory, w.ledger)

    # A case naming a drug the catalogue does not hold: the case and the drug are named.
    only_morphine = Catalogue([w.catalogue.get("86999900000909")])
    no_lots = {**state, "stock": {"lots": []}}
    with pytest.raises(CustodyStateError, match=f"case {cid} names drug {FENTANYL.code}"):
        restore(no_lots, only_morphine)
    with pytest.raises(CustodyStateError, match=r"F2502.*not in the catalogue"):
        restore(state, only_morphine)
    bad = json.loads(json.dumps(state))
    bad["cases"][0]["state"] = "LOST_IN_SPACE"
    with pytest.raises(CustodyStateError, match=rf"case {cid}\.state: 'LOST_IN_SPACE'"):
        restore(bad)
    bad = json.loads(json.dumps(state))
    del bad["cases"][0]["lots"]["F2506"]["held"]
    with pytest.raises(CustodyStateError, match=rf"case {cid}\.lots\.F2506: missing held"):
        restore(bad)
    bad = json.loads(json.dumps(state))
    bad["cases"][0]["surprise"] = 1
    with pytest.raises(CustodyStateError, match="unknown surprise"):
        restore(bad)
    with pytest.raises(CustodyStateError, match="format"):
        restore({**state, "format": 99})
    bad = json.loads(json.dumps(state))
    bad["stock"]["lots"][0]["picked"] = 10_000
    with pytest.raises(CustodyStateError, match="is not a balance"):
        restore(bad)
    with pytest.raises(CustodyStateError, match="discrepancy index"):
        restore({**state, "discrepancy_case": {"CD-000001-D9": cid}})
    with pytest.raises(CustodyStateError, match="stock row is missing"):
        join_state({"format": 1, "next_case": 1, "discrepancy_case": {}}, {})


def test_the_stock_keeps_fefo_order_and_tie_breaks() -> None:
    w = World()
    cid = w.request(quantity=12)
    w.approve(cid)
    w.pick(cid)
    stock = VaultStock.restore(w.catalogue, json.loads(dumps(w.stock.export_state())))
    assert stock.snapshot() == w.stock.snapshot()
    assert stock.lots(FENTANYL.code) == w.stock.lots(FENTANYL.code)
    # A new lot received after a restore goes after the restored ones (receipt order).
    assert [b.order for b in stock._lots.values()] == [0, 1, 2, 3]


# -- the keeper: only what changed, in order; and the desk's trips after a restart -------------


class FakeStore:
    def __init__(self) -> None:
        self.saves: list[tuple[dict[str, Any], dict[str, Any]]] = []
        self.fail = False

    def save(self, changed: Any, meta: Any, at: float = 0.0) -> None:
        if self.fail:
            raise OSError("disk full")
        self.saves.append((json.loads(dumps(changed)), json.loads(dumps(meta))))


def test_the_keeper_writes_only_what_changed() -> None:
    from fleet.api.custody_runner import CustodyStateKeeper

    w = World()
    store = FakeStore()
    keeper = CustodyStateKeeper(store, ledger_seq=0)
    try:
        a = w.request()
        b = w.request(patient_ref="P-0043")
        pending = keeper.capture_and_save(w.book, w.now)
        assert pending is not None
        pending.result()
        (changed, meta), *_ = store.saves
        assert set(changed) == {f"case:{a}", f"case:{b}", "stock"}
        assert meta == {"format": 1, "next_case": 2, "discrepancy_case": {}, "ledger_seq": 0}
        assert keeper.capture_and_save(w.book, w.now) is None  # nothing changed
        w.approve(a)
        w.pick(a)
        keeper.capture_and_save(w.book, w.now).result()  # type: ignore[union-attr]
        changed, meta = store.saves[-1]
        assert set(changed) == {f"case:{a}", "stock"}
        assert changed[f"case:{a}"]["pos"] == 0
        assert meta["ledger_seq"] == len(w.ledger) == 1
        w.book.cancel(b, w.auth("an1"), "postponed", now=w.tick())
        keeper.capture_and_save(w.book, w.now).result()  # type: ignore[union-attr]
        assert set(store.saves[-1][0]) == {f"case:{b}"}
        # A failed write is logged, and the next save writes everything again.
        store.fail = True
        w.verify(a)
        keeper.capture_and_save(w.book, w.now).result()  # type: ignore[union-attr]
        store.fail = False
        keeper.capture_and_save(w.book, w.now).result()  # type: ignore[union-attr]
        assert set(store.saves[-1][0]) == {f"case:{a}", f"case:{b}", "stock"}
        # What the rows add up to is the book.
        rows: dict[str, Any] = {}
        for changed, _ in store.saves:
            rows.update(changed)
        meta = store.saves[-1][1]
        state = join_state(meta, rows)
        restored = CustodyBook.restore(state, w.catalogue, w.directory, w.ledger)
        assert restored.cases() == w.book.cases()
        # A keeper started on saved rows writes nothing for an unchanged book.
        again = CustodyStateKeeper(store, ledger_seq=1, saved={"meta": meta, "rows": rows})
        assert again.capture(restored) is None
        again.close()
    finally:
        keeper.close()


def test_the_desk_rebuilds_its_trips_from_the_fleets_orders() -> None:
    from fleet.custody.desk import CustodyDesk
    from fleet.dispatch import messages as m
    from fleet.domain.cargo import CargoClass
    from fleet.domain.order import Order, OrderState
    from fleet.domain.priority import Priority

    w = World()
    sent: list[m.Inbound] = []
    ids = itertools.count(1)

    def submit(msg: m.Inbound) -> Order | None:
        sent.append(msg)
        if isinstance(msg, m.CreateOrder):
            return order(f"ORD-{next(ids)}", msg.custody_case, return_of=msg.return_of)
        return None

    def order(oid: str, case: str, state: OrderState = OrderState.PENDING, **kw: Any) -> Order:
        o = Order(
            oid, "PHARMACY", "OR-3", CargoClass.CONTROLLED_DRUG, 1, Priority.URGENT, w.now,
            custody_case=case, **kw,
        )  # fmt: skip
        if state is not OrderState.PENDING:
            o.move_to(OrderState.ASSIGNED, w.now)
            if state in (OrderState.PICKED_UP, OrderState.DELIVERED):
                o.move_to(OrderState.PICKED_UP, w.now)
            if state is not OrderState.PICKED_UP:
                o.move_to(state, w.tick(), "robot offline")
        return o

    # Case a: loaded, its robot left and failed while the state was not saved.
    # Case b: verified, its first order failed (before loading), a second one is pending.
    # Case c: verified, its only order was cancelled: it must be sent again.
    a, b, c = w.request(), w.request(patient_ref="P-2"), w.request(patient_ref="P-3")
    for cid in (a, b, c):
        w.approve(cid)
        w.pick(cid)
        w.verify(cid)
    w.load(a, "ph1")
    desk = CustodyDesk(w.book, submit, pharmacy_station="PHARMACY")
    moved = desk.rebuild_trips(
        [
            order("ORD-1", a, OrderState.FAILED),
            order("ORD-2", b, OrderState.FAILED),
            order("ORD-3", b),
            order("ORD-4", c, OrderState.CANCELLED),
        ]
    )
    assert sorted(moved) == [a, c]
    # The fault the fleet reported; the desk starts the recovery at once.
    assert w.book.case(a).state is CaseState.RECOVERY_PENDING
    trip_b = desk.trip_of(b)
    assert trip_b is not None and (trip_b.order_id, trip_b.done) == ("ORD-3", False)
    assert desk.trips["ORD-2"].done and w.book.case(b).state is CaseState.VERIFIED
    assert desk.resend == {c}
    desk.tick(w.tick())  # the alert for a's fault, and a robot called for c again
    assert [type(x).__name__ for x in sent] == ["RaiseAlert", "CreateOrder"]
