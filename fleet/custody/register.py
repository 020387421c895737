"""The day's controlled-drug register (专用账册 / 专册登记), per drug and lot, from the custody
ledger: what was issued, administered, wasted and returned, the empty ampoules recovered, the
discrepancies still open, and whether the day balances.

Pure: the caller passes the ledger's events (e.g. `LedgerStore.iter_events()`), the catalogue,
the day and the building's time zone; nothing here reads a database or the wall clock.
`fleet custody report` prints it (`fleet.cli`).

The day
-------
A day is the building's local calendar day in the IANA zone `tz` (default UTC), from local
midnight to the next local midnight (23 or 25 hours on a daylight-saving change). An event
belongs to the day of its `occurred_at` (when the hand-over happened), not of its `recorded_at`.

What each event counts as
-------------------------
Every event names one lot. Drug units carry the drug's unit (`"ampoule"`), empty containers the
unit `"empty:<drug unit>"` (`"empty:ampoule"`).

=========================  ==================================================================
event                      register column
=========================  ==================================================================
ISSUE                      issued (发出/领用: vault to the picker)
ADMINISTER                 administered (使用: person to patient)
WASTE                      wasted (残余药液, discarded before a witness)
RETURN_RECEIVE, drug unit  returned (退库: the pharmacy accepts unused units)
RETURN_RECEIVE, "empty:"   empties recovered (空安瓿回收)
DISCREPANCY_OPEN           opens a discrepancy; its quantity is the difference in units
DISCREPANCY_RESOLVE        closes one (see below)
CORRECTION                 replaces the quantity of the event it corrects (see below)
anything else              nothing: VERIFY, LOAD, UNLOAD, HANDOVER, RECEIVE and RETURN move
                           custody without changing the totals; RECEIPT, COUNT, DESTROY,
                           OVERRIDE and KEY_ROTATION are not dispensing movements
=========================  ==================================================================

Empty containers count only as recovered: an ISSUE, ADMINISTER, WASTE or DISCREPANCY_OPEN in an
`empty:` unit adds nothing to the drug columns (a discrepancy of empties still counts as open).

Formulas (per drug and lot)
---------------------------
::

    balance         = issued - administered - wasted - returned          (this day's events)
    brought_forward = the same sum over every earlier event of the lot   (out at 00:00)
    outstanding     = brought_forward + balance                           (out at 24:00:
                      units in OR custody or on robots at the end of the day)
    empties_expected = administered + wasted   (drugs whose catalogue entry has
                      returns_empty_container; none for others and for unknown codes)
    open_discrepancies = discrepancies opened before the end of the day and not resolved
                      before it; open_difference = the sum of their quantities (drug units)

With nothing out at the start of the day, outstanding equals balance: the units issued that day
still out. The register is **balanced** when, on every line, outstanding is 0 and no discrepancy
is open, i.e. every unit issued was administered, wasted or returned (the domain rule
issued = administered + wasted + returned + open discrepancy, §1.4, with nothing left open). A
day that uses up units brought forward from an earlier day has a negative balance and can still
be balanced; the earlier day was not. A lot is listed when it had a counted event that day
(including a resolved discrepancy), units out at the start of the day or a discrepancy open at
its end; each drug also gets a TOTAL line (sums over its lots).

Discrepancies
-------------
A DISCREPANCY_RESOLVE closes the DISCREPANCY_OPEN whose seq its `corrects` names. Without
`corrects` (or when it names no DISCREPANCY_OPEN) it closes the oldest still-open discrepancy of
the same drug and lot with the same `order_id` (any order when the resolution names none). The
resolution's quantity is ignored: where the missing units went is recorded by their own events
(a RETURN_RECEIVE when found, a WASTE for a witnessed breakage). A discrepancy resolved after
the day's end is open in that day's register.

Corrections
-----------
The ledger is never edited; a CORRECTION names the event it corrects (`corrects` = seq). The
register counts the corrected event with the correction's quantity, on the day the corrected
event occurred (a correction recorded later changes the earlier day's register: the register
shows what the ledger knows now). A correction that gives a different drug code, lot or expiry
moves the event to them (a wrong lot recorded). Of several corrections of one event the last
(highest seq) wins; a correction of a correction corrects the original event. A quantity of 0
voids the event. Lines counting a corrected event that day are marked with its seq.
"""

from __future__ import annotations

import csv
import io
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fleet.custody.catalogue import Catalogue, Drug
from fleet.custody.ledger import CustodyEvent, EventType, format_quantity

EMPTY_PREFIX = "empty:"
NOT_IN_CATALOGUE = "(not in catalogue)"
TOTAL = "TOTAL"

# The CSV's columns, in order. Append new columns at the end: readers may go by position.
CSV_HEADER: tuple[str, ...] = (
    "date",
    "tz",
    "row",  # "lot" for a lot's line, "total" for a drug's TOTAL line
    "drug_code",
    "name",
    "name_zh",
    "form",
    "strength",
    "unit",
    "control_class",
    "lot",
    "expiry",
    "brought_forward",
    "issued",
    "administered",
    "wasted",
    "returned",
    "balance",
    "outstanding",
    "empties_expected",  # empty when the drug leaves no container to return
    "empties_recovered",
    "open_discrepancies",
    "open_difference",
    "resolved_discrepancies",
    "corrected_seqs",  # seqs of corrected events counted on the line, space separated
)

_ZERO = Decimal(0)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_COUNTED = frozenset(
    {
        EventType.ISSUE,
        EventType.ADMINISTER,
        EventType.WASTE,
        EventType.RETURN_RECEIVE,
        EventType.DISCREPANCY_OPEN,
    }
)
# Signed effect of a drug-unit event on the units out of the pharmacy.
_OUT_SIGN = {
    EventType.ISSUE: 1,
    EventType.ADMINISTER: -1,
    EventType.WASTE: -1,
    EventType.RETURN_RECEIVE: -1,
}


def parse_zone(tz: str) -> ZoneInfo:
    """The IANA time zone `tz` (`"Asia/Shanghai"`, `"UTC"`); ValueError naming it if unknown."""
    if not isinstance(tz, str) or not tz.strip():
        raise ValueError(f"unknown time zone {tz!r} (expected an IANA name such as Asia/Shanghai)")
    try:
        return ZoneInfo(tz.strip())
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"unknown time zone {tz!r} (expected an IANA name such as Asia/Shanghai)"
        ) from exc


def day_bounds(day: date, tz: str) -> tuple[int, int]:
    """The day's [start, end) in microseconds since the epoch: local midnight to the next."""
    zone = parse_zone(tz)
    start = datetime.combine(day, time(0), tzinfo=zone)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)
    return _micros(start), _micros(end)


def _micros(moment: datetime) -> int:
    # Exact integer arithmetic: the ledger stores integer microseconds.
    return (moment.astimezone(UTC) - _EPOCH) // timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class RegisterLine:
    """One line of the register: one drug and lot (`is_total` False) or a drug's TOTAL.

    Quantities are in the drug's `unit`; see the module docstring for the formulas.
    """

    day: date
    drug_code: str
    name: str
    name_zh: str
    form: str  # the catalogue's DosageForm in lower case, "" for an unknown code
    strength: str
    unit: str
    control_class: str  # the catalogue's ControlClass, "" for an unknown code
    lot: str  # "" on a TOTAL line
    expiry: date | None
    brought_forward: Decimal
    issued: Decimal
    administered: Decimal
    wasted: Decimal
    returned: Decimal
    empties_expected: Decimal | None  # None: the drug leaves no container to return
    empties_recovered: Decimal
    open_discrepancies: int
    open_difference: Decimal
    resolved_discrepancies: int
    corrected_seqs: tuple[int, ...] = ()
    is_total: bool = False

    @property
    def balance(self) -> Decimal:
        """issued - administered - wasted - returned, this day's events only."""
        return self.issued - self.administered - self.wasted - self.returned

    @property
    def outstanding(self) -> Decimal:
        """Units out of the pharmacy at the end of the day: brought_forward + balance."""
        return self.brought_forward + self.balance

    @property
    def corrected(self) -> bool:
        return bool(self.corrected_seqs)

    @property
    def balanced(self) -> bool:
        """Nothing out at the end of the day and no discrepancy open."""
        return self.outstanding == 0 and self.open_discrepancies == 0


@dataclass(frozen=True, slots=True)
class Register:
    """A day's register: `lines` per drug and lot, `totals` one per drug, in the same drug order
    (catalogue order, unknown codes after it by code; lots by name)."""

    day: date
    tz: str
    lines: tuple[RegisterLine, ...]
    totals: tuple[RegisterLine, ...]

    @property
    def balanced(self) -> bool:
        """Every unit issued was administered, wasted or returned, and no discrepancy is open
        (see the module docstring); an empty day is balanced."""
        return all(line.balanced for line in self.lines)

    def rows(self) -> Iterator[RegisterLine]:
        """Each drug's lot lines followed by its TOTAL line."""
        by_code: dict[str, list[RegisterLine]] = {}
        for line in self.lines:
            by_code.setdefault(line.drug_code, []).append(line)
        for total in self.totals:
            yield from by_code.get(total.drug_code, ())
            yield total

    def problems(self) -> list[str]:
        """Why the register is not balanced, one sentence per lot (empty when balanced)."""
        out = []
        for line in self.lines:
            what = f"{line.drug_code} {line.name} lot {line.lot or '(none)'}"
            if line.outstanding > 0:
                out.append(
                    f"{what}: {_q(line.outstanding)} {line.unit} still out "
                    f"(not administered, wasted or returned)"
                )
            elif line.outstanding < 0:
                out.append(
                    f"{what}: {_q(-line.outstanding)} {line.unit} more used or returned than issued"
                )
            if line.open_discrepancies:
                noun = "discrepancy" if line.open_discrepancies == 1 else "discrepancies"
                out.append(
                    f"{what}: {line.open_discrepancies} {noun} open "
                    f"({_q(line.open_difference)} {line.unit})"
                )
        return out

    def to_csv(self) -> str:
        """The register as CSV (`CSV_HEADER`, then `rows()`), quantities in plain decimals."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(CSV_HEADER)
        for line in self.rows():
            writer.writerow(
                [
                    self.day.isoformat(),
                    self.tz,
                    "total" if line.is_total else "lot",
                    line.drug_code,
                    line.name,
                    line.name_zh,
                    line.form,
                    line.strength,
                    line.unit,
                    line.control_class,
                    line.lot,
                    line.expiry.isoformat() if line.expiry is not None else "",
                    _q(line.brought_forward),
                    _q(line.issued),
                    _q(line.administered),
                    _q(line.wasted),
                    _q(line.returned),
                    _q(line.balance),
                    _q(line.outstanding),
                    "" if line.empties_expected is None else _q(line.empties_expected),
                    _q(line.empties_recovered),
                    line.open_discrepancies,
                    _q(line.open_difference),
                    line.resolved_discrepancies,
                    " ".join(str(s) for s in line.corrected_seqs),
                ]
            )
        return buffer.getvalue()

    def to_table(self) -> str:
        """The register as an aligned text table for people, with a legend in `#` lines and a
        closing BALANCED / NOT BALANCED verdict."""
        out = [
            f"# 麻醉药品、精神药品专用账册 (专册登记) - controlled-drug register for "
            f"{self.day.isoformat()}, local day in {self.tz}",
            "# One line per drug and lot (批号), then a TOTAL per drug; quantities in the drug's "
            "unit (单位).",
            "# B/F      上日结存  out of the pharmacy at the start of the day",
            "# Issued   发出/领用  issued by 发药人, checked by 复核人",
            "# Admin    使用      given to patients",
            "# Wasted   残余销毁  residual discarded before a witness (双人)",
            "# Returned 退库      unused units the pharmacy took back",
            "# Balance  本日结算  Issued - Admin - Wasted - Returned",
            "# Out      结存      B/F + Balance: still in OR custody or on robots at 24:00",
            "# Emp.exp  空安瓿应回收  Admin + Wasted;  Emp.rec  空安瓿已回收 (empties recovered)",
            "# Disc     未结差错  discrepancies open at 24:00;  Disc.units  their difference",
        ]
        headers = (
            "Code",
            "Drug",
            "Form",
            "Strength",
            "Unit",
            "Lot",
            "Expiry",
            "B/F",
            "Issued",
            "Admin",
            "Wasted",
            "Returned",
            "Balance",
            "Out",
            "Emp.exp",
            "Emp.rec",
            "Disc",
            "Disc.units",
            "Notes",
        )
        right = set(range(7, 18))  # the numeric columns
        table: list[tuple[str, ...]] = [headers]
        for line in self.rows():
            table.append(
                (
                    line.drug_code,
                    line.name,
                    line.form,
                    line.strength,
                    line.unit,
                    TOTAL if line.is_total else line.lot,
                    line.expiry.isoformat() if line.expiry is not None else "",
                    _q(line.brought_forward),
                    _q(line.issued),
                    _q(line.administered),
                    _q(line.wasted),
                    _q(line.returned),
                    _q(line.balance),
                    _q(line.outstanding),
                    "-" if line.empties_expected is None else _q(line.empties_expected),
                    _q(line.empties_recovered),
                    str(line.open_discrepancies),
                    _q(line.open_difference),
                    _notes(line),
                )
            )
        if len(table) == 1:
            out.append("(no controlled-drug movements and nothing outstanding on this day)")
        else:
            widths = [max(_width(row[i]) for row in table) for i in range(len(headers))]
            for row in table:
                cells = [_pad(cell, widths[i], right=i in right) for i, cell in enumerate(row)]
                out.append("  ".join(cells).rstrip())
        if self.balanced:
            out.append(
                "BALANCED: every unit issued was administered, wasted or returned; "
                "no discrepancy open"
            )
        else:
            out.append("NOT BALANCED:")
            out.extend(f"  - {p}" for p in self.problems())
        return "\n".join(out) + "\n"


def _notes(line: RegisterLine) -> str:
    notes = []
    if line.corrected_seqs:
        notes.append("corrected " + ", ".join(f"#{s}" for s in line.corrected_seqs))
    if line.resolved_discrepancies:
        notes.append(f"{line.resolved_discrepancies} discrepancy resolved")
    return "; ".join(notes)


def _q(value: Decimal) -> str:
    return format_quantity(value)


def _width(text: str) -> int:
    # Chinese names take two columns on a terminal; align on what is seen, not on len().
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def _pad(text: str, width: int, *, right: bool) -> str:
    fill = " " * (width - _width(text))
    return fill + text if right else text + fill


# -- building the register ----------------------------------------------------------------------


@dataclass(slots=True)
class _Entry:
    """A counted event as the register sees it, after corrections."""

    seq: int
    event_type: EventType
    drug_code: str
    lot: str
    expiry: date | None
    quantity: Decimal
    unit: str
    occurred_us: int
    order_id: str
    corrected_by: int | None = None

    @property
    def empty(self) -> bool:
        return self.unit.startswith(EMPTY_PREFIX)


@dataclass(slots=True)
class _Resolve:
    seq: int
    drug_code: str
    lot: str
    order_id: str
    corrects: int | None
    occurred_us: int


@dataclass(slots=True)
class _Lot:
    """Running sums of one drug and lot."""

    expiry: date | None = None
    unit: str = ""  # the unit seen in the events, for codes not in the catalogue
    active: bool = False  # a counted event (or a resolution) on the day
    brought_forward: Decimal = _ZERO
    issued: Decimal = _ZERO
    administered: Decimal = _ZERO
    wasted: Decimal = _ZERO
    returned: Decimal = _ZERO
    empties_recovered: Decimal = _ZERO
    open_discrepancies: int = 0
    open_difference: Decimal = _ZERO
    resolved_discrepancies: int = 0
    corrected: set[int] = field(default_factory=set)


def day_register(
    events: Iterable[CustodyEvent], catalogue: Catalogue, day: date, tz: str = "UTC"
) -> Register:
    """The register of `day` (the local day in IANA zone `tz`) from the ledger's `events` (all of
    them, in seq order, as `iter_events` gives them: earlier days give the units brought
    forward, later corrections and resolutions apply). ValueError for an unknown `tz`.

    Memory holds the counted events up to the day's end and the discrepancies, not the whole
    ledger.
    """
    start, end = day_bounds(day, tz)
    entries: dict[int, _Entry] = {}
    resolves: list[_Resolve] = []
    corrections: list[CustodyEvent] = []
    correction_target: dict[int, int] = {}  # seq of a CORRECTION -> seq it corrects

    for ev in events:
        kind = _event_type(ev.event_type)
        if kind is EventType.CORRECTION:
            if ev.corrects is not None:
                correction_target[ev.seq] = ev.corrects
                corrections.append(ev)
        elif kind is EventType.DISCREPANCY_RESOLVE:
            resolves.append(
                _Resolve(ev.seq, ev.drug_code, ev.lot, ev.order_id, ev.corrects, ev.occurred_at_us)
            )
        elif kind in _COUNTED and (ev.occurred_at_us < end or kind is EventType.DISCREPANCY_OPEN):
            # A correction never moves an event in time, so a movement after the day cannot
            # count in it. Discrepancies are kept whatever their time (they are few): a
            # resolution naming a later one must not fall back to closing an earlier one.
            entries[ev.seq] = _Entry(
                ev.seq,
                kind,
                ev.drug_code,
                ev.lot,
                ev.expiry,
                ev.quantity,
                ev.unit,
                ev.occurred_at_us,
                ev.order_id,
            )

    for corr in sorted(corrections, key=lambda c: c.seq):
        target = _root(corr.seq, correction_target)
        entry = entries.get(target)
        if entry is None:
            continue
        entry.quantity = corr.quantity
        if corr.drug_code:
            entry.drug_code = corr.drug_code
        if corr.lot:
            entry.lot = corr.lot
        if corr.expiry is not None:
            entry.expiry = corr.expiry
        entry.corrected_by = corr.seq

    lots: dict[tuple[str, str], _Lot] = {}

    def lot_of(drug_code: str, lot: str) -> _Lot:
        return lots.setdefault((drug_code, lot), _Lot())

    for entry in sorted(entries.values(), key=lambda e: e.seq):
        if entry.occurred_us >= end:
            continue
        acc = lot_of(entry.drug_code, entry.lot)
        if acc.expiry is None:
            acc.expiry = entry.expiry
        if not acc.unit and not entry.empty:
            acc.unit = entry.unit
        in_day = entry.occurred_us >= start
        if in_day:
            acc.active = True
            if entry.corrected_by is not None:
                acc.corrected.add(entry.seq)
        if entry.event_type is EventType.DISCREPANCY_OPEN:
            continue  # counted with the resolutions below
        if entry.empty:
            if in_day and entry.event_type is EventType.RETURN_RECEIVE:
                acc.empties_recovered += entry.quantity
            continue
        if not in_day:
            acc.brought_forward += _OUT_SIGN[entry.event_type] * entry.quantity
        elif entry.event_type is EventType.ISSUE:
            acc.issued += entry.quantity
        elif entry.event_type is EventType.ADMINISTER:
            acc.administered += entry.quantity
        elif entry.event_type is EventType.WASTE:
            acc.wasted += entry.quantity
        else:
            acc.returned += entry.quantity

    closed_at = _link_resolutions(entries, resolves)
    for entry in entries.values():
        if entry.event_type is not EventType.DISCREPANCY_OPEN or entry.occurred_us >= end:
            continue
        acc = lot_of(entry.drug_code, entry.lot)
        when = closed_at.get(entry.seq)
        if when is None or when >= end:
            acc.open_discrepancies += 1
            if not entry.empty:
                acc.open_difference += entry.quantity
        elif when >= start:
            acc.resolved_discrepancies += 1
            acc.active = True

    return _assemble(lots, catalogue, day, tz)


def _event_type(value: str) -> EventType | None:
    try:
        return EventType(value)
    except ValueError:
        return None  # an unknown type (a tampered row): `verify` reports it, the register skips


def _root(seq: int, target: dict[int, int]) -> int:
    """The event a correction finally corrects (a correction of a correction corrects the
    original)."""
    seen = set()
    while seq in target and seq not in seen:
        seen.add(seq)
        seq = target[seq]
    return seq


def _link_resolutions(entries: dict[int, _Entry], resolves: list[_Resolve]) -> dict[int, int]:
    """Seq of each DISCREPANCY_OPEN that a resolution closes -> the resolution's time."""
    opens = sorted(
        (e for e in entries.values() if e.event_type is EventType.DISCREPANCY_OPEN),
        key=lambda e: e.seq,
    )
    closed: dict[int, int] = {}
    for res in sorted(resolves, key=lambda r: r.seq):
        named = entries.get(res.corrects) if res.corrects is not None else None
        if named is not None and named.event_type is EventType.DISCREPANCY_OPEN:
            if named.seq not in closed:
                closed[named.seq] = res.occurred_us
            continue
        for candidate in opens:
            # Only discrepancies already recorded can be closed (seq order is record order).
            if candidate.seq > res.seq:
                break
            if (
                candidate.seq not in closed
                and candidate.drug_code == res.drug_code
                and candidate.lot == res.lot
                and (not res.order_id or candidate.order_id == res.order_id)
            ):
                closed[candidate.seq] = res.occurred_us
                break
    return closed


def _assemble(
    lots: dict[tuple[str, str], _Lot], catalogue: Catalogue, day: date, tz: str
) -> Register:
    order = {code: i for i, code in enumerate(catalogue.codes)}
    keep = sorted(
        (
            key
            for key, acc in lots.items()
            if acc.active or acc.brought_forward != 0 or acc.open_discrepancies
        ),
        key=lambda k: (order.get(k[0], len(order)), k[0], k[1]),
    )
    lines: list[RegisterLine] = []
    totals: list[RegisterLine] = []
    group: list[RegisterLine] = []
    for i, (code, lot) in enumerate(keep):
        acc = lots[(code, lot)]
        drug = catalogue.find(code)
        line = _line(day, code, lot, acc, drug)
        lines.append(line)
        group.append(line)
        if i + 1 == len(keep) or keep[i + 1][0] != code:
            totals.append(_total(group, drug))
            group = []
    return Register(day=day, tz=tz, lines=tuple(lines), totals=tuple(totals))


def _line(day: date, code: str, lot: str, acc: _Lot, drug: Drug | None) -> RegisterLine:
    expected: Decimal | None = None
    if drug is not None and drug.returns_empty_container:
        expected = acc.administered + acc.wasted
    return RegisterLine(
        day=day,
        drug_code=code,
        name=drug.name if drug is not None else NOT_IN_CATALOGUE,
        name_zh=drug.name_zh if drug is not None else "",
        form=drug.form.value.lower() if drug is not None else "",
        strength=drug.strength if drug is not None else "",
        unit=drug.unit if drug is not None else acc.unit,
        control_class=drug.control_class.value if drug is not None else "",
        lot=lot,
        expiry=acc.expiry,
        brought_forward=acc.brought_forward,
        issued=acc.issued,
        administered=acc.administered,
        wasted=acc.wasted,
        returned=acc.returned,
        empties_expected=expected,
        empties_recovered=acc.empties_recovered,
        open_discrepancies=acc.open_discrepancies,
        open_difference=acc.open_difference,
        resolved_discrepancies=acc.resolved_discrepancies,
        corrected_seqs=tuple(sorted(acc.corrected)),
    )


def _total(group: list[RegisterLine], drug: Drug | None) -> RegisterLine:
    first = group[0]

    def total(name: str) -> Decimal:
        return sum((getattr(line, name) for line in group), _ZERO)

    expected: Decimal | None = None
    if drug is not None and drug.returns_empty_container:
        expected = sum((line.empties_expected or _ZERO for line in group), _ZERO)
    return RegisterLine(
        day=first.day,
        drug_code=first.drug_code,
        name=first.name,
        name_zh=first.name_zh,
        form=first.form,
        strength=first.strength,
        unit=first.unit,
        control_class=first.control_class,
        lot="",
        expiry=None,
        brought_forward=total("brought_forward"),
        issued=total("issued"),
        administered=total("administered"),
        wasted=total("wasted"),
        returned=total("returned"),
        empties_expected=expected,
        empties_recovered=total("empties_recovered"),
        open_discrepancies=sum(line.open_discrepancies for line in group),
        open_difference=total("open_difference"),
        resolved_discrepancies=sum(line.resolved_discrepancies for line in group),
        corrected_seqs=tuple(sorted({s for line in group for s in line.corrected_seqs})),
        is_total=True,
    )
