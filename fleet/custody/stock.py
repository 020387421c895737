"""The pharmacy vault's controlled-drug stock, per lot, with first-expiry-first-out picking.

Rules (hospital-domain.md §1.4, rule 5: every record carries a lot and an expiry; expired stock
is blocked from issue; FEFO picking):

- Stock is counted in whole units of the catalogue's `Drug.unit` (ampoules, vials, patches,
  tablets) and kept as `int`: the 专用账册 counts units down to the smallest package, and a
  fraction of an ampoule is wastage (recorded by the custody lifecycle), never stock.
- **Expiry day rule.** A lot is usable through its expiry date inclusive and expired from the
  day after: `expired = expiry < today`. A label that gives only a month (有效期至 2025-03)
  means usable through the end of that month; `expiry_from_label` turns it into that last day,
  so stock only ever holds a full date.
- `pick` takes first-expiry-first-out across the usable lots of a drug (equal expiry: the lot
  received first goes first), never an expired lot, and is all-or-nothing. `pick_lot` takes a
  lot someone scanned: it refuses an expired lot but does not insist on FEFO, since the scanned
  box is the one in the pharmacist's hand.
- Nothing here goes negative: a pick never takes more than is on hand, and a return never
  brings back more of a lot than was picked from it and not yet returned.
- Every refused call raises (InvalidArgument naming the field, NotFound for an unknown drug or
  lot, FailedPrecondition for the stock's state) and changes nothing.

This is a model, not a record: the custody lifecycle records each movement as ledger events
(RECEIPT with two people, ISSUE/VERIFY, RETURN_RECEIVE) and drives this stock from them. A `Pick`
carries what an `EventDraft` needs (drug code, lot, expiry, quantity). Pure: today's date is an
argument; `local_date` derives it from an injected Clock.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from typing import Any

from fleet.clock import Clock
from fleet.custody.catalogue import Catalogue
from fleet.domain.errors import FailedPrecondition, InvalidArgument, NotFound

MAX_UNITS = 1_000_000  # per movement: far above any real delivery, low enough to catch typos

_LABEL = re.compile(r"(\d{4})-?(\d{2})(?:-?(\d{2}))?")


def is_expired(expiry: date, today: date) -> bool:
    """The expiry day rule: usable through `expiry` inclusive, expired from the next day."""
    return expiry < today


def expiry_from_label(text: str) -> date:
    """The last usable day of a label's expiry: `2025-03-31` / `20250331` as given, and a month
    alone (`2025-03`, `202503`, as in 有效期至 2025-03) as that month's last day.

    Raises InvalidArgument("expiry") for anything else.
    """
    match = _LABEL.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise InvalidArgument("expiry", f"{text!r} is not an expiry date (YYYY-MM or YYYY-MM-DD)")
    year, month = int(match[1]), int(match[2])
    try:
        if match[3] is None:
            return date(year, month, calendar.monthrange(year, month)[1])
        return date(year, month, int(match[3]))
    except ValueError:
        raise InvalidArgument("expiry", f"{text!r} is not a calendar date") from None


def local_date(clock: Clock, tz: tzinfo) -> date:
    """Today's date in the hospital's time zone by `clock` (a day ends at local midnight)."""
    return datetime.fromtimestamp(clock.now(), tz).date()


def _check_day(value: object, field: str) -> date:
    # datetime is a subclass of date: refuse it, or a time of day would slip into date maths.
    if not isinstance(value, date) or isinstance(value, datetime):
        raise InvalidArgument(field, f"must be a date (datetime.date), got {value!r}")
    return value


def _check_units(value: object, field: str = "quantity") -> int:
    if type(value) is not int:
        raise InvalidArgument(field, f"must be a whole number of units (int), got {value!r}")
    if not 0 < value <= MAX_UNITS:
        raise InvalidArgument(field, f"must be between 1 and {MAX_UNITS} units, got {value}")
    return value


def _check_text(value: object, field: str) -> str:
    if not isinstance(value, str) or not value.strip() or value != value.strip():
        raise InvalidArgument(
            field, f"must be non-empty text without surrounding spaces, got {value!r}"
        )
    return value


@dataclass(frozen=True, slots=True)
class Lot:
    """One manufacturer's batch of one drug (批号 with its 有效期 and 生产单位).

    `lot` is the batch number as printed; `expiry` the last usable day (see `expiry_from_label`
    for month-only labels). Raises InvalidArgument naming the field for a bad value.
    """

    drug_code: str
    lot: str
    expiry: date
    manufacturer: str

    def __post_init__(self) -> None:
        _check_text(self.drug_code, "drug_code")
        _check_text(self.lot, "lot")
        _check_day(self.expiry, "expiry")
        _check_text(self.manufacturer, "manufacturer")

    def expired(self, today: date) -> bool:
        """True from the day after the expiry date."""
        return is_expired(self.expiry, today)


@dataclass(frozen=True, slots=True)
class LotStock:
    """A lot's balance: `on_hand` = `received` - `picked` + `returned`, never negative."""

    lot: Lot
    on_hand: int
    received: int
    picked: int
    returned: int

    @property
    def drug_code(self) -> str:
        return self.lot.drug_code

    @property
    def expiry(self) -> date:
        return self.lot.expiry

    @property
    def outstanding(self) -> int:
        """Units picked from this lot and not returned: the most a return may bring back."""
        return self.picked - self.returned


@dataclass(frozen=True, slots=True)
class Pick:
    """Units taken from one lot: what the ISSUE event of the lifecycle records."""

    drug_code: str
    lot: str
    expiry: date
    quantity: int


@dataclass(slots=True)
class _Balance:
    lot: Lot
    order: int  # receipt order of the lot's first delivery: FEFO's tie-break
    received: int = 0
    picked: int = 0
    returned: int = 0

    @property
    def on_hand(self) -> int:
        return self.received - self.picked + self.returned

    def view(self) -> LotStock:
        return LotStock(self.lot, self.on_hand, self.received, self.picked, self.returned)


class VaultStock:
    """The pharmacy vault's stock of the catalogue's drugs, per lot (see the module docstring).

    Only drugs in `catalogue` are held; a call naming another drug raises NotFound.
    """

    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue
        self._lots: dict[tuple[str, str], _Balance] = {}
        self._by_drug: dict[str, list[_Balance]] = {}  # kept in FEFO order

    # ---- changes ---------------------------------------------------------------------------

    def receive(self, lot: Lot, quantity: int, today: date) -> LotStock:
        """Add `quantity` units of `lot` (a goods receipt; the two people who check it are the
        lifecycle's record, not this stock's). A lot already held must name the same expiry and
        manufacturer. A lot that is already expired is refused (FailedPrecondition).
        """
        if not isinstance(lot, Lot):
            raise InvalidArgument("lot", f"must be a Lot, got {lot!r}")
        quantity = _check_units(quantity)
        today = _check_day(today, "today")
        drug = self.catalogue.get(lot.drug_code)
        if lot.expired(today):
            raise FailedPrecondition(
                f"lot {lot.lot} of {drug.code} expired on {lot.expiry.isoformat()}: "
                f"expired stock cannot be received"
            )
        balance = self._lots.get((lot.drug_code, lot.lot))
        if balance is not None:
            held = balance.lot
            for field in ("expiry", "manufacturer"):
                if getattr(held, field) != getattr(lot, field):
                    raise InvalidArgument(
                        field,
                        f"lot {lot.lot} of {drug.code} is held with {field} "
                        f"{_text(getattr(held, field))}, not {_text(getattr(lot, field))}",
                    )
        else:
            balance = _Balance(lot, order=len(self._lots))
            self._lots[(lot.drug_code, lot.lot)] = balance
            lots = self._by_drug.setdefault(lot.drug_code, [])
            lots.append(balance)
            lots.sort(key=_fefo)
        balance.received += quantity
        return balance.view()

    def pick(self, drug_code: str, quantity: int, today: date) -> list[Pick]:
        """Take `quantity` units of a drug first-expiry-first-out across its usable lots.

        All or nothing: when the usable (non-expired) stock is short, FailedPrecondition names
        the drug, the quantity wanted and the quantity available, and nothing is taken.
        """
        quantity = _check_units(quantity)
        today = _check_day(today, "today")
        drug = self.catalogue.get(drug_code)
        usable = [b for b in self._by_drug.get(drug.code, ()) if b.on_hand > 0]
        usable = [b for b in usable if not b.lot.expired(today)]
        available = sum(b.on_hand for b in usable)
        if available < quantity:
            blocked = self._blocked_units(drug.code, today)
            why = f"; {blocked} more in expired lots, blocked from issue" if blocked else ""
            raise FailedPrecondition(
                f"not enough {drug.describe()} in the vault: wanted {quantity} {drug.unit}, "
                f"available {available}{why}"
            )
        picks: list[Pick] = []
        left = quantity
        for balance in usable:
            take = min(left, balance.on_hand)
            balance.picked += take
            picks.append(Pick(drug.code, balance.lot.lot, balance.lot.expiry, take))
            left -= take
            if left == 0:
                break
        return picks

    def pick_lot(self, drug_code: str, lot: str, quantity: int, today: date) -> Pick:
        """Take `quantity` units from one scanned lot. Refuses an unknown lot (NotFound), an
        expired lot and more than the lot has on hand (FailedPrecondition)."""
        quantity = _check_units(quantity)
        today = _check_day(today, "today")
        balance = self._balance(drug_code, lot)
        if balance.lot.expired(today):
            raise FailedPrecondition(
                f"lot {lot} of {drug_code} expired on {balance.lot.expiry.isoformat()}"
            )
        if quantity > balance.on_hand:
            raise FailedPrecondition(
                f"lot {lot} of {drug_code}: wanted {quantity}, on hand {balance.on_hand}"
            )
        balance.picked += quantity
        return Pick(drug_code, lot, balance.lot.expiry, quantity)

    def return_units(self, drug_code: str, lot: str, quantity: int) -> LotStock:
        """Put unused units of a lot back into stock (after the pharmacy accepted the return:
        RETURN_RECEIVE, blind count and lot check). At most what was picked from the lot and not
        returned yet comes back (FailedPrecondition otherwise). Expired units may come back:
        they stay blocked from issue until destroyed."""
        quantity = _check_units(quantity)
        balance = self._balance(drug_code, lot)
        outstanding = balance.picked - balance.returned
        if quantity > outstanding:
            raise FailedPrecondition(
                f"lot {lot} of {drug_code}: cannot return {quantity}, only {outstanding} "
                f"picked and not yet returned"
            )
        balance.returned += quantity
        return balance.view()

    # ---- reading ---------------------------------------------------------------------------

    def on_hand(self, drug_code: str) -> int:
        """Units of a drug physically in the vault, expired lots included."""
        drug = self.catalogue.get(drug_code)
        return sum(b.on_hand for b in self._by_drug.get(drug.code, ()))

    def available(self, drug_code: str, today: date) -> int:
        """Units of a drug that may be issued `today` (expired lots left out)."""
        today = _check_day(today, "today")
        return self.on_hand(drug_code) - self._blocked_units(drug_code, today)

    def lot(self, drug_code: str, lot: str) -> LotStock:
        """One lot's balance; NotFound when the vault never received it."""
        return self._balance(drug_code, lot).view()

    def lots(self, drug_code: str) -> list[LotStock]:
        """A drug's lots with units on hand, first-expiry-first-out (expired ones first)."""
        drug = self.catalogue.get(drug_code)
        return [b.view() for b in self._by_drug.get(drug.code, ()) if b.on_hand > 0]

    def blocked_lots(self, today: date) -> list[LotStock]:
        """Expired lots that still have units on hand (to be destroyed under supervision), by
        expiry, drug code and lot."""
        today = _check_day(today, "today")
        blocked = [b for b in self._lots.values() if b.on_hand > 0 and b.lot.expired(today)]
        blocked.sort(key=lambda b: (b.lot.expiry, b.lot.drug_code, b.order))
        return [b.view() for b in blocked]

    def snapshot(self) -> tuple[LotStock, ...]:
        """Every lot ever received, empty ones included, by drug code and then FEFO."""
        return tuple(b.view() for code in sorted(self._by_drug) for b in self._by_drug[code])

    # ---- saved state (fleet.custody.state) ------------------------------------------------

    def export_state(self) -> dict[str, Any]:
        """Every lot ever received with its balance, in receipt order, as JSON-able data:
        `VaultStock.restore(catalogue, state)` builds an equal stock (same balances, same FEFO
        order and tie-breaks) from it."""
        return {
            "lots": [
                {
                    "drug_code": b.lot.drug_code,
                    "lot": b.lot.lot,
                    "expiry": b.lot.expiry.isoformat(),
                    "manufacturer": b.lot.manufacturer,
                    "order": b.order,
                    "received": b.received,
                    "picked": b.picked,
                    "returned": b.returned,
                }
                for b in sorted(self._lots.values(), key=lambda b: b.order)
            ]
        }

    @classmethod
    def restore(cls, catalogue: Catalogue, state: Mapping[str, Any]) -> VaultStock:
        """A stock from `export_state`'s data. Raises `fleet.custody.state.CustodyStateError`
        naming the lot for a drug missing from `catalogue` or a balance that cannot be."""
        from fleet.custody.state import CustodyStateError

        stock = cls(catalogue)
        if not isinstance(state, Mapping) or set(state) != {"lots"}:
            raise CustodyStateError("custody state stock: expected an object with lots only")
        items = state["lots"]
        if not isinstance(items, list):
            raise CustodyStateError("custody state stock.lots: expected a list")
        seen_orders: set[int] = set()
        names = ("drug_code", "lot", "expiry", "manufacturer", "order", "received", "picked",
                 "returned")  # fmt: skip
        for i, item in enumerate(items):
            where = f"custody state stock.lots[{i}]"
            if not isinstance(item, Mapping) or set(item) != set(names):
                raise CustodyStateError(f"{where}: expected an object with {', '.join(names)}")
            where = f"custody state stock lot {item['lot']!r} of {item['drug_code']!r}"
            counts = [item[n] for n in ("order", "received", "picked", "returned")]
            if any(type(n) is not int or n < 0 for n in counts):
                raise CustodyStateError(f"{where}: order and counts must be whole numbers >= 0")
            order, received, picked, returned = counts
            if returned > picked or picked - returned > received:
                raise CustodyStateError(
                    f"{where}: received {received}, picked {picked}, returned {returned} "
                    "is not a balance"
                )
            if catalogue.find(item["drug_code"]) is None:
                raise CustodyStateError(f"{where}: the drug is not in the catalogue")
            try:
                lot = Lot(
                    item["drug_code"],
                    item["lot"],
                    date.fromisoformat(item["expiry"]),
                    item["manufacturer"],
                )
            except (InvalidArgument, TypeError, ValueError) as exc:
                raise CustodyStateError(f"{where}: {exc}") from None
            key = (lot.drug_code, lot.lot)
            if key in stock._lots or order in seen_orders:
                raise CustodyStateError(f"{where}: given twice (or its order {order} is)")
            seen_orders.add(order)
            balance = _Balance(lot, order, received, picked, returned)
            stock._lots[key] = balance
            stock._by_drug.setdefault(lot.drug_code, []).append(balance)
        for lots in stock._by_drug.values():
            lots.sort(key=_fefo)
        return stock

    # ---- helpers ---------------------------------------------------------------------------

    def _balance(self, drug_code: str, lot: str) -> _Balance:
        drug = self.catalogue.get(drug_code)
        balance = self._lots.get((drug.code, lot))
        if balance is None:
            raise NotFound(f"lot {lot!r} of {drug.code} is not in the vault")
        return balance

    def _blocked_units(self, drug_code: str, today: date) -> int:
        return sum(b.on_hand for b in self._by_drug.get(drug_code, ()) if b.lot.expired(today))


def _fefo(balance: _Balance) -> tuple[date, int]:
    return balance.lot.expiry, balance.order


def _text(value: object) -> str:
    return value.isoformat() if isinstance(value, date) else repr(value)


__all__ = [
    "MAX_UNITS",
    "Lot",
    "LotStock",
    "Pick",
    "VaultStock",
    "expiry_from_label",
    "is_expired",
    "local_date",
]
