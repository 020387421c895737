"""The custody book's working state as JSON: what a restarted dispatcher needs to go on.

The ledger is the record of every custody change and survives a restart by itself; what it does
not hold is the working state of the book: every case (its state machine, lots, grants,
discrepancies and history), the discrepancy index, the case counter and the vault's lots and
balances. `CustodyBook.export_state()` captures them as a JSON-able dict and
`CustodyBook.restore(state, ...)` builds an equal book from one (catalogue, staff directory and
ledger sink come from their own sources, as at a first start).

An explicit codec, not pickle: enums by value, dates as ISO text, tuples as lists, times as
numbers (JSON keeps a float's every bit), and every object decoded field by field, so that a
field missing from or unknown to a stored state is an error naming where it is
(`CustodyStateError`), never a silently different case. `FORMAT` is the shape's version.

Stored shape (`export_state`):

```
{"format": 1, "next_case": 7,
 "cases": [<case>, ...],                 # in request order
 "discrepancy_case": {"CD-000003-D1": "CD-000003", ...},
 "stock": {"lots": [<lot balance>, ...]}} # in receipt order
```

`split_state` / `join_state` cut a state into rows for the store (one per case, one for the
stock, and the rest as the meta row) and put them together again. Pure: no I/O.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any, TypeVar

from fleet.custody.discrepancy import Discrepancy, DiscrepancyState, Resolution, ResolutionCode
from fleet.custody.lifecycle import (
    CaseState,
    CustodyCase,
    HistoryEntry,
    Leg,
    LotAccount,
    OpenGrant,
)

FORMAT = 1
CASE_PREFIX = "case:"
STOCK_KEY = "stock"
META_KEY = "meta"

E = TypeVar("E")


class CustodyStateError(ValueError):
    """A stored custody state that cannot be used: says where and what is wrong."""


# -- small checked readers --------------------------------------------------------------------


def _fields(obj: object, where: str, names: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise CustodyStateError(f"{where}: expected an object, got {type(obj).__name__}")
    missing = [n for n in names if n not in obj]
    unknown = sorted(set(obj) - set(names))
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if unknown:
            parts.append(f"unknown {', '.join(unknown)}")
        raise CustodyStateError(f"{where}: {'; '.join(parts)}")
    return obj


def _str(v: object, where: str) -> str:
    if not isinstance(v, str):
        raise CustodyStateError(f"{where}: expected text, got {v!r}")
    return v


def _int(v: object, where: str) -> int:
    if type(v) is not int:
        raise CustodyStateError(f"{where}: expected a whole number, got {v!r}")
    return v


def _num(v: object, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise CustodyStateError(f"{where}: expected a finite number, got {v!r}")
    return float(v)


def _opt(read: Callable[[object, str], E], v: object, where: str) -> E | None:
    return None if v is None else read(v, where)


def _bool(v: object, where: str) -> bool:
    if not isinstance(v, bool):
        raise CustodyStateError(f"{where}: expected true or false, got {v!r}")
    return v


def _list(v: object, where: str) -> list[Any]:
    if not isinstance(v, list):
        raise CustodyStateError(f"{where}: expected a list, got {type(v).__name__}")
    return v


def _strs(v: object, where: str) -> tuple[str, ...]:
    return tuple(_str(x, f"{where}[{i}]") for i, x in enumerate(_list(v, where)))


def _date(v: object, where: str) -> date:
    try:
        return date.fromisoformat(_str(v, where))
    except ValueError:
        raise CustodyStateError(f"{where}: {v!r} is not an ISO date") from None


def _enum(kind: Callable[[str], E], v: object, where: str) -> E:
    try:
        return kind(_str(v, where))
    except ValueError:
        raise CustodyStateError(
            f"{where}: {v!r} is not a {getattr(kind, '__name__', kind)}"
        ) from None


def _mapping(v: object, where: str) -> Mapping[str, Any]:
    if not isinstance(v, Mapping):
        raise CustodyStateError(f"{where}: expected an object, got {type(v).__name__}")
    return v


def _iso(d: date | None) -> str | None:
    return None if d is None else d.isoformat()


# -- lots, grants, history ----------------------------------------------------------------------

_LOT_FIELDS = (
    "lot",
    "expiry",
    "issued",
    "administered",
    "wasted",
    "broken",
    "returned_unused",
    "lost",
    "held",
    "opened",
    "empties_held",
    "empties_returned",
    "empties_written_off",
)
_LOT_COUNTS = _LOT_FIELDS[2:]


def encode_lot_account(a: LotAccount) -> dict[str, Any]:
    out: dict[str, Any] = {"lot": a.lot, "expiry": a.expiry.isoformat()}
    for name in _LOT_COUNTS:
        out[name] = getattr(a, name)
    return out


def decode_lot_account(obj: object, where: str) -> LotAccount:
    d = _fields(obj, where, _LOT_FIELDS)
    counts = {n: _int(d[n], f"{where}.{n}") for n in _LOT_COUNTS}
    return LotAccount(
        lot=_str(d["lot"], f"{where}.lot"), expiry=_date(d["expiry"], f"{where}.expiry"), **counts
    )


_GRANT_FIELDS = ("case_id", "staff_id", "robot_id", "compartment", "opened_at", "expires_at")


def encode_grant(g: OpenGrant) -> dict[str, Any]:
    return {n: getattr(g, n) for n in _GRANT_FIELDS}


def decode_grant(obj: object, where: str) -> OpenGrant:
    d = _fields(obj, where, _GRANT_FIELDS)
    return OpenGrant(
        case_id=_str(d["case_id"], f"{where}.case_id"),
        staff_id=_str(d["staff_id"], f"{where}.staff_id"),
        robot_id=_str(d["robot_id"], f"{where}.robot_id"),
        compartment=_str(d["compartment"], f"{where}.compartment"),
        opened_at=_num(d["opened_at"], f"{where}.opened_at"),
        expires_at=_num(d["expires_at"], f"{where}.expires_at"),
    )


_HISTORY_FIELDS = ("at", "state", "step", "seq")


def encode_history(h: HistoryEntry) -> dict[str, Any]:
    return {"at": h.at, "state": h.state.value, "step": h.step, "seq": h.seq}


def decode_history(obj: object, where: str) -> HistoryEntry:
    d = _fields(obj, where, _HISTORY_FIELDS)
    return HistoryEntry(
        at=_num(d["at"], f"{where}.at"),
        state=_enum(CaseState, d["state"], f"{where}.state"),
        step=_str(d["step"], f"{where}.step"),
        seq=_opt(_int, d["seq"], f"{where}.seq"),
    )


# -- discrepancies ------------------------------------------------------------------------------

_RESOLUTION_FIELDS = (
    "code",
    "note",
    "resolver",
    "resolver_auth",
    "witness",
    "witness_auth",
    "proposed_at",
)


def encode_resolution(r: Resolution) -> dict[str, Any]:
    return {
        "code": r.code.value,
        "note": r.note,
        "resolver": r.resolver,
        "resolver_auth": list(r.resolver_auth),
        "witness": r.witness,
        "witness_auth": list(r.witness_auth),
        "proposed_at": r.proposed_at,
    }


def decode_resolution(obj: object, where: str) -> Resolution:
    d = _fields(obj, where, _RESOLUTION_FIELDS)
    return Resolution(
        code=_enum(ResolutionCode, d["code"], f"{where}.code"),
        note=_str(d["note"], f"{where}.note"),
        resolver=_str(d["resolver"], f"{where}.resolver"),
        resolver_auth=_strs(d["resolver_auth"], f"{where}.resolver_auth"),
        witness=_str(d["witness"], f"{where}.witness"),
        witness_auth=_strs(d["witness_auth"], f"{where}.witness_auth"),
        proposed_at=_num(d["proposed_at"], f"{where}.proposed_at"),
    )


_DISCREPANCY_FIELDS = (
    "id",
    "case_id",
    "step",
    "drug_code",
    "lot",
    "expiry",
    "unit",
    "empties",
    "expected",
    "counted",
    "problems",
    "custodian",
    "opened_at",
    "open_event_id",
    "state",
    "resolution",
    "rejected",
    "approved_by",
    "approved_auth",
    "approved_at",
    "destination",
    "resolve_event_id",
)


def encode_discrepancy(d: Discrepancy) -> dict[str, Any]:
    return {
        "id": d.id,
        "case_id": d.case_id,
        "step": d.step,
        "drug_code": d.drug_code,
        "lot": d.lot,
        "expiry": _iso(d.expiry),
        "unit": d.unit,
        "empties": d.empties,
        "expected": d.expected,
        "counted": d.counted,
        "problems": list(d.problems),
        "custodian": d.custodian,
        "opened_at": d.opened_at,
        "open_event_id": d.open_event_id,
        "state": d.state.value,
        "resolution": None if d.resolution is None else encode_resolution(d.resolution),
        "rejected": [
            {"resolution": encode_resolution(r), "by": by, "reason": reason}
            for r, by, reason in d.rejected
        ],
        "approved_by": d.approved_by,
        "approved_auth": list(d.approved_auth),
        "approved_at": d.approved_at,
        "destination": d.destination,
        "resolve_event_id": d.resolve_event_id,
    }


def _rejected(obj: object, where: str) -> tuple[Resolution, str, str]:
    d = _fields(obj, where, ("resolution", "by", "reason"))
    return (
        decode_resolution(d["resolution"], f"{where}.resolution"),
        _str(d["by"], f"{where}.by"),
        _str(d["reason"], f"{where}.reason"),
    )


def decode_discrepancy(obj: object, where: str) -> Discrepancy:
    d = _fields(obj, where, _DISCREPANCY_FIELDS)
    w = where
    return Discrepancy(
        id=_str(d["id"], f"{w}.id"),
        case_id=_str(d["case_id"], f"{w}.case_id"),
        step=_str(d["step"], f"{w}.step"),
        drug_code=_str(d["drug_code"], f"{w}.drug_code"),
        lot=_str(d["lot"], f"{w}.lot"),
        expiry=_opt(_date, d["expiry"], f"{w}.expiry"),
        unit=_str(d["unit"], f"{w}.unit"),
        empties=_bool(d["empties"], f"{w}.empties"),
        expected=_int(d["expected"], f"{w}.expected"),
        counted=_int(d["counted"], f"{w}.counted"),
        problems=_strs(d["problems"], f"{w}.problems"),
        custodian=_str(d["custodian"], f"{w}.custodian"),
        opened_at=_num(d["opened_at"], f"{w}.opened_at"),
        open_event_id=_str(d["open_event_id"], f"{w}.open_event_id"),
        state=_enum(DiscrepancyState, d["state"], f"{w}.state"),
        resolution=_opt(decode_resolution, d["resolution"], f"{w}.resolution"),
        rejected=[
            _rejected(x, f"{w}.rejected[{i}]") for i, x in enumerate(_list(d["rejected"], w))
        ],
        approved_by=_str(d["approved_by"], f"{w}.approved_by"),
        approved_auth=_strs(d["approved_auth"], f"{w}.approved_auth"),
        approved_at=_opt(_num, d["approved_at"], f"{w}.approved_at"),
        destination=_str(d["destination"], f"{w}.destination"),
        resolve_event_id=_str(d["resolve_event_id"], f"{w}.resolve_event_id"),
    )


# -- cases --------------------------------------------------------------------------------------

# Plain text fields of a case, in declaration order.
_CASE_TEXT = (
    "id",
    "prescription_no",
    "patient_ref",
    "case_ref",
    "or_station",
    "requested_by",
    "drug_code",
    "unit",
    "recipient",
    "order_id",
    "custodian",
    "accountable",
    "approved_by",
    "picker",
    "verifier",
    "reason",
    "robot_id",
    "compartment",
    "seal_id",
    "alternate",
    "received_by",
    "fault_detail",
    "fault_location",
)
_CASE_FIELDS = (
    *_CASE_TEXT,
    "quantity",
    "returns_empty_container",
    "alternates",
    "created_at",
    "state",
    "lots",
    "seals",
    "reserved",
    "leg",
    "awaiting_since",
    "alt_paged_at",
    "grant",
    "grants",
    "fault_state",
    "resume_state",
    "discrepancies",
    "history",
    "event_seqs",
    "closed_at",
)


def encode_case(c: CustodyCase) -> dict[str, Any]:
    """A case as a JSON-able dict (every field; see `decode_case`)."""
    out: dict[str, Any] = {n: getattr(c, n) for n in _CASE_TEXT}
    out.update(
        quantity=c.quantity,
        returns_empty_container=c.returns_empty_container,
        alternates=list(c.alternates),
        created_at=c.created_at,
        state=c.state.value,
        lots={k: encode_lot_account(a) for k, a in c.lots.items()},
        seals=list(c.seals),
        reserved=c.reserved,
        leg=None if c.leg is None else c.leg.value,
        awaiting_since=c.awaiting_since,
        alt_paged_at=c.alt_paged_at,
        grant=None if c.grant is None else encode_grant(c.grant),
        grants=[encode_grant(g) for g in c.grants],
        fault_state=None if c.fault_state is None else c.fault_state.value,
        resume_state=None if c.resume_state is None else c.resume_state.value,
        discrepancies={k: encode_discrepancy(d) for k, d in c.discrepancies.items()},
        history=[encode_history(h) for h in c.history],
        event_seqs=list(c.event_seqs),
        closed_at=c.closed_at,
    )
    return out


def decode_case(obj: object, where: str = "case") -> CustodyCase:
    """A case from `encode_case`'s dict; CustodyStateError naming the place of a bad value."""
    if isinstance(obj, Mapping) and isinstance(obj.get("id"), str):
        where = f"case {obj['id']}"
    d = _fields(obj, where, _CASE_FIELDS)
    text = {n: _str(d[n], f"{where}.{n}") for n in _CASE_TEXT}
    lots = _mapping(d["lots"], f"{where}.lots")
    discrepancies = _mapping(d["discrepancies"], f"{where}.discrepancies")
    return CustodyCase(
        **text,
        quantity=_int(d["quantity"], f"{where}.quantity"),
        returns_empty_container=_bool(
            d["returns_empty_container"], f"{where}.returns_empty_container"
        ),
        alternates=_strs(d["alternates"], f"{where}.alternates"),
        created_at=_num(d["created_at"], f"{where}.created_at"),
        state=_enum(CaseState, d["state"], f"{where}.state"),
        lots={
            _str(k, f"{where}.lots"): decode_lot_account(v, f"{where}.lots.{k}")
            for k, v in lots.items()
        },
        seals=list(_strs(d["seals"], f"{where}.seals")),
        reserved=_bool(d["reserved"], f"{where}.reserved"),
        leg=_opt(lambda v, w: _enum(Leg, v, w), d["leg"], f"{where}.leg"),
        awaiting_since=_opt(_num, d["awaiting_since"], f"{where}.awaiting_since"),
        alt_paged_at=_opt(_num, d["alt_paged_at"], f"{where}.alt_paged_at"),
        grant=_opt(decode_grant, d["grant"], f"{where}.grant"),
        grants=[
            decode_grant(g, f"{where}.grants[{i}]")
            for i, g in enumerate(_list(d["grants"], f"{where}.grants"))
        ],
        fault_state=_opt(
            lambda v, w: _enum(CaseState, v, w), d["fault_state"], f"{where}.fault_state"
        ),
        resume_state=_opt(
            lambda v, w: _enum(CaseState, v, w), d["resume_state"], f"{where}.resume_state"
        ),
        discrepancies={
            _str(k, f"{where}.discrepancies"): decode_discrepancy(v, f"{where}.discrepancies.{k}")
            for k, v in discrepancies.items()
        },
        history=[
            decode_history(h, f"{where}.history[{i}]")
            for i, h in enumerate(_list(d["history"], f"{where}.history"))
        ],
        event_seqs=[
            _int(s, f"{where}.event_seqs[{i}]")
            for i, s in enumerate(_list(d["event_seqs"], f"{where}.event_seqs"))
        ],
        closed_at=_opt(_num, d["closed_at"], f"{where}.closed_at"),
    )


# -- the whole state, and its rows ------------------------------------------------------------

STATE_FIELDS = ("format", "next_case", "cases", "discrepancy_case", "stock")


def check_state(state: object) -> Mapping[str, Any]:
    """The top level of a stored state, checked (format and fields)."""
    d = _fields(state, "custody state", STATE_FIELDS)
    if d["format"] != FORMAT:
        raise CustodyStateError(
            f"custody state: format {d['format']!r} is not the supported format {FORMAT}"
        )
    return d


def dumps(obj: object) -> str:
    """Canonical JSON text of a state or a part of it (sorted keys, no spaces): the same
    object always gives the same text, so the text's hash says whether it changed."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def case_key(case_id: str) -> str:
    """The store row of a case: `case:<id>`."""
    return f"{CASE_PREFIX}{case_id}"


def split_state(state: Mapping[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Rows for the store: `{"case:<id>": {"pos": i, "case": <case>}, "stock": <stock>}` and
    the meta row (format, counter, discrepancy index). `join_state` is the inverse."""
    rows: dict[str, dict[str, Any]] = {
        case_key(c["id"]): {"pos": i, "case": c} for i, c in enumerate(state["cases"])
    }
    rows[STOCK_KEY] = state["stock"]
    meta = {k: state[k] for k in ("format", "next_case", "discrepancy_case")}
    return rows, meta


def join_state(meta: Mapping[str, Any], rows: Mapping[str, Any]) -> dict[str, Any]:
    """A state from the meta row and the other rows (see `split_state`). Extra meta keys (the
    store's own, like the ledger seq) are left out. CustodyStateError when a row is missing."""
    if STOCK_KEY not in rows:
        raise CustodyStateError("custody state: the stock row is missing")
    cases = []
    for key, body in rows.items():
        if not key.startswith(CASE_PREFIX):
            continue
        row = _fields(body, f"custody state row {key}", ("pos", "case"))
        cases.append((_int(row["pos"], f"custody state row {key}.pos"), key, row["case"]))
    cases.sort(key=lambda item: (item[0], item[1]))
    try:
        head = {k: meta[k] for k in ("format", "next_case", "discrepancy_case")}
    except KeyError as exc:
        raise CustodyStateError(f"custody state meta: missing {exc.args[0]}") from None
    return {**head, "cases": [c for _, _, c in cases], "stock": rows[STOCK_KEY]}


__all__ = [
    "CASE_PREFIX",
    "FORMAT",
    "META_KEY",
    "STATE_FIELDS",
    "STOCK_KEY",
    "CustodyStateError",
    "case_key",
    "check_state",
    "decode_case",
    "decode_discrepancy",
    "dumps",
    "encode_case",
    "encode_discrepancy",
    "join_state",
    "split_state",
]
