"""Custody discrepancies: what a count that does not match opens, and how one is closed.

Part of the controlled-drug custody lifecycle (`fleet.custody.lifecycle`, which opens, resolves
and approves them); this module holds the model and the pure rules. hospital-domain.md 1.4:

- A discrepancy opens automatically whenever a blind count differs from the expected count, a
  lot does not match the lots issued, a seal differs or was broken, or a count is missing at the
  end of a case. One discrepancy covers one lot of one case and one kind of thing counted
  (drug units, or the empty containers used units leave behind); one step may open several.
- It closes only with a reason code, a second person (the resolver's witness) and the approval
  of a pharmacist who is neither the resolver nor the witness (`OPEN -> PROPOSED -> RESOLVED`;
  a rejected proposal goes back to `OPEN`).

Quantities
----------
`expected` is what the record says the custodian held; `counted` what the blind count found.
`missing = max(expected - counted, 0)` units are not where they should be: they leave the
custodian's custody into the discrepancy (ledger custodian `discrepancy:<id>`) and count in the
conservation rule as the open difference until the resolution says where they went:

| code          | missing units go to          | counted as                          |
| ------------- | ---------------------------- | ----------------------------------- |
| COUNT_ERROR   | back to the case's custodian | in custody again (a recount found   |
| FOUND         |                              | them; at the vault: returned)       |
| BROKEN        | `waste`                      | broken (witnessed breakage, spill)  |
| LOSS          | `loss`                       | lost (reported: police, drug        |
|               |                              | regulator and health authority)     |

`surplus = max(counted - expected, 0)` units (more counted than the record, or a lot that was
never issued to the case) are *not* taken into the case's custody: the record is what was
issued, and a surplus is either a miscount (COUNT_ERROR) or stock the pharmacy must take in on
its own record (OTHER, with a note). A discrepancy with nothing missing (a broken or different
seal with a matching count) moves nothing either. See `allowed_codes`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum

from fleet.domain.errors import InvalidArgument

EMPTY_PREFIX = "empty:"


class DiscrepancyState(StrEnum):
    """Where a discrepancy stands."""

    OPEN = "OPEN"  # nothing proposed yet, or a proposal was rejected
    PROPOSED = "PROPOSED"  # a resolution with a reason and a witness awaits a pharmacist
    RESOLVED = "RESOLVED"  # approved; the missing units went where the code says


class ResolutionCode(StrEnum):
    """Why a discrepancy is closed, which decides where missing units go (module docstring)."""

    COUNT_ERROR = "COUNT_ERROR"  # recounted with a witness: the record was right
    FOUND = "FOUND"  # the missing units turned up and are with the custodian
    BROKEN = "BROKEN"  # broken or spilled, witnessed: to waste
    LOSS = "LOSS"  # lost or stolen: written off and reported
    SEAL_DAMAGED = "SEAL_DAMAGED"  # seal broken or different, but every unit is there
    OTHER = "OTHER"  # anything else with a note (only when nothing is missing)


# Codes that put the missing units back into the case's custody.
BACK_TO_CUSTODY = frozenset({ResolutionCode.COUNT_ERROR, ResolutionCode.FOUND})
# Codes that write missing units off, and the ledger custodian they go to.
WRITE_OFF: Mapping[ResolutionCode, str] = {
    ResolutionCode.BROKEN: "waste",
    ResolutionCode.LOSS: "loss",
}
# Codes that need a free-text note as well (the reason code alone says too little).
NOTE_REQUIRED = frozenset({ResolutionCode.LOSS, ResolutionCode.OTHER})


def empty_unit(drug_unit: str) -> str:
    """The ledger unit of a drug's empty containers: `empty:ampoule`."""
    return f"{EMPTY_PREFIX}{drug_unit}"


def discrepancy_ref(discrepancy_id: str) -> str:
    """The discrepancy as a ledger custodian of missing units: `discrepancy:<id>`."""
    return f"discrepancy:{discrepancy_id}"


@dataclass(frozen=True, slots=True)
class Resolution:
    """A proposed resolution: the code, a note, and the two people who proposed it (the resolver
    and their witness) with the factors each presented."""

    code: ResolutionCode
    note: str
    resolver: str
    resolver_auth: tuple[str, ...]
    witness: str
    witness_auth: tuple[str, ...]
    proposed_at: float


@dataclass(slots=True)
class Discrepancy:
    """One lot of one case whose count did not match (see the module docstring).

    `unit` is the ledger unit counted: the drug's unit, or `empty:<unit>` when `empties`.
    `custodian` is the ledger custodian the missing units were expected with when it opened.
    `problems` says what was wrong, for people ("counted 3, expected 5", "seal broken").
    `rejected` keeps proposals a pharmacist turned down.
    """

    id: str
    case_id: str
    step: str
    drug_code: str
    lot: str
    expiry: date | None
    unit: str
    empties: bool
    expected: int
    counted: int
    problems: tuple[str, ...]
    custodian: str
    opened_at: float
    open_event_id: str
    state: DiscrepancyState = DiscrepancyState.OPEN
    resolution: Resolution | None = None
    rejected: list[tuple[Resolution, str, str]] = field(default_factory=list)
    approved_by: str = ""
    approved_auth: tuple[str, ...] = ()
    approved_at: float | None = None
    destination: str = ""
    resolve_event_id: str = ""

    def copy(self) -> Discrepancy:
        """A copy sharing nothing mutable with this one."""
        return dataclasses.replace(self, rejected=list(self.rejected))

    @property
    def difference(self) -> int:
        """expected - counted: positive when units are missing, negative for a surplus."""
        return self.expected - self.counted

    @property
    def missing(self) -> int:
        """Units not found where the record put them (0 for a surplus)."""
        return max(self.expected - self.counted, 0)

    @property
    def surplus(self) -> int:
        """Units counted beyond the record (not taken into the case's custody)."""
        return max(self.counted - self.expected, 0)

    @property
    def is_open(self) -> bool:
        """Not resolved yet (OPEN or PROPOSED): it blocks closing the case."""
        return self.state is not DiscrepancyState.RESOLVED

    def describe(self) -> str:
        """`CD-000001-D1 (lot L1, ampoule: counted 3, expected 5; seal broken)`."""
        return f"{self.id} (lot {self.lot}, {self.unit}: {'; '.join(self.problems)})"


def allowed_codes(d: Discrepancy) -> frozenset[ResolutionCode]:
    """The codes that may close `d`: with units missing, a code that says where they are or
    went; with a surplus, a miscount or a note; with nothing missing, anything but a write-off."""
    if d.missing > 0:
        return frozenset(BACK_TO_CUSTODY | set(WRITE_OFF))
    if d.surplus > 0:
        return frozenset({ResolutionCode.COUNT_ERROR, ResolutionCode.OTHER})
    return frozenset(
        {ResolutionCode.COUNT_ERROR, ResolutionCode.SEAL_DAMAGED, ResolutionCode.OTHER}
    )


def parse_code(value: object) -> ResolutionCode:
    """A resolution code from its name; InvalidArgument("reason_code") for anything else."""
    if isinstance(value, ResolutionCode):
        return value
    if isinstance(value, str) and value.strip().upper() in ResolutionCode.__members__:
        return ResolutionCode[value.strip().upper()]
    known = ", ".join(c.value for c in ResolutionCode)
    raise InvalidArgument("reason_code", f"{value!r} is not a resolution code (known: {known})")


@dataclass(frozen=True, slots=True)
class LotCount:
    """One lot of a blind count compared with the record.

    `moved` units (at most the expected) change hands or are confirmed; `expected - moved` are
    missing; `counted - moved` are a surplus. `issued` is False for a lot never issued to the
    case (a lot mismatch). `problems` is empty when everything matches.
    """

    lot: str
    expected: int
    counted: int
    issued: bool
    problems: tuple[str, ...]

    @property
    def moved(self) -> int:
        return min(self.expected, self.counted)


def compare_counts(
    expected: Mapping[str, int],
    counted: Mapping[str, int],
    *,
    what: str,
    extra_problems: tuple[str, ...] = (),
) -> list[LotCount]:
    """Compare a blind count by lot (`counted`) with the record (`expected`), lot by lot.

    Every lot of `expected` appears (a lot not counted counts 0), followed by counted lots that
    are not in `expected` (lot mismatch), in the order given. `extra_problems` (a broken seal,
    a different seal id) apply to every lot that has anything expected or counted. `what` names
    the thing counted in messages ("ampoule", "empty:ampoule").
    """
    out: list[LotCount] = []
    for lot, e in expected.items():
        c = counted.get(lot, 0)
        problems: list[str] = []
        if c != e:
            problems.append(f"counted {c} {what}, expected {e}")
        if e or c:
            problems.extend(extra_problems)
        out.append(LotCount(lot, e, c, True, tuple(problems)))
    for lot, c in counted.items():
        if lot in expected or c == 0:
            continue
        problems = [f"lot {lot} was not issued to this case: counted {c} {what}"]
        problems.extend(extra_problems)
        out.append(LotCount(lot, 0, c, False, tuple(problems)))
    return out


def check_counts(value: object, field_name: str) -> dict[str, int]:
    """A blind count by lot (`{lot: units}`), each lot non-empty text and each count a whole
    number >= 0; InvalidArgument naming `field_name` otherwise."""
    if not isinstance(value, Mapping):
        raise InvalidArgument(field_name, f"must be a mapping of lot to units, got {value!r}")
    out: dict[str, int] = {}
    for lot, n in value.items():
        if not isinstance(lot, str) or not lot.strip() or lot != lot.strip():
            raise InvalidArgument(field_name, f"{lot!r} is not a lot number")
        if type(n) is not int or n < 0:
            raise InvalidArgument(
                field_name, f"lot {lot}: the count must be a whole number >= 0, got {n!r}"
            )
        out[lot] = n
    return out


__all__ = [
    "BACK_TO_CUSTODY",
    "EMPTY_PREFIX",
    "NOTE_REQUIRED",
    "WRITE_OFF",
    "Discrepancy",
    "DiscrepancyState",
    "LotCount",
    "Resolution",
    "ResolutionCode",
    "allowed_codes",
    "check_counts",
    "compare_counts",
    "discrepancy_ref",
    "empty_unit",
    "parse_code",
]
