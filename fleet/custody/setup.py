"""Build a `CustodyBook` from data files: the controlled-drug catalogue, the staff and the
pharmacy vault's opening stock, writing to a ledger sink the caller provides.

Pure (DESIGN.md principle 1): no database or gRPC here. The caller opens the ledger (e.g.
`fleet.store.ledger.open_ledger(url)` wrapped in `ClockedSink`) and passes it in; the API edge
does that in `fleet.api.custody_servicer.open_custody_runner`.

The stock file
--------------
`load_vault_stock` reads a YAML mapping with `lots:`, a list of lots, each with

- `drug_code`: the drug's code in the catalogue (quote it: digits alone are a number to YAML);
- `lot`: the batch number as printed;
- `expiry`: the last usable day, `YYYY-MM-DD`, or `YYYY-MM` for a month-only label (usable
  through the month's last day; `fleet.custody.stock.expiry_from_label`);
- `units`: whole units on hand (at least 1);
- `received`: the day the lot came in (`YYYY-MM-DD`); the lot must not be expired on that day,
  which is how an expired lot can still be in the vault, blocked from issue;
- `manufacturer`: optional, default the catalogue's manufacturer of the drug.

Every problem is reported with the file, the path inside it (`lots[2].expiry`) and what is
wrong, all of them at once (`StockFileError`); nothing is received then. See
`simulators/data/vault_stock.yaml`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import yaml

from fleet.building.loader import ROOT, describe_value, join_path, yaml_error_at
from fleet.custody.catalogue import Catalogue, load_catalogue
from fleet.custody.lifecycle import CustodyBook, LedgerSink, LifecycleSettings
from fleet.custody.people import PinHashing, StaffDirectory, load_staff
from fleet.custody.stock import Lot, VaultStock, expiry_from_label
from fleet.domain.errors import DomainError

_REPO = Path(__file__).resolve().parent.parent.parent
DEMO_DATA = _REPO / "simulators" / "data"


@dataclass(frozen=True)
class CustodySources:
    """Where the custody data comes from: catalogue, staff and vault stock files (YAML).

    The defaults are the demo files shipped in `simulators/data` (invented people, PINs and
    lots: never for a real hospital).
    """

    catalogue: Path = DEMO_DATA / "controlled_drugs.yaml"
    staff: Path = DEMO_DATA / "staff.yaml"
    stock: Path = DEMO_DATA / "vault_stock.yaml"


@dataclass(frozen=True)
class StockFileIssue:
    """One problem in a stock file: where it is and what is wrong."""

    file: str
    path: str  # e.g. `lots[3].expiry`; `<root>` for the whole file
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.path}: {self.message}"


class StockFileError(Exception):
    """A stock file that cannot be used; `issues` lists every problem found."""

    def __init__(self, issues: list[StockFileIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))


_Report = Callable[[str, str], None]  # (path inside the file, message)

_LOT_KEYS = {
    "drug_code": True,
    "lot": True,
    "expiry": True,
    "units": True,
    "received": True,
    "manufacturer": False,
}


def load_vault_stock(
    path: str | Path, catalogue: Catalogue, stock: VaultStock | None = None
) -> VaultStock:
    """Receive the lots of the stock file at `path` into `stock` (a new one on `catalogue` if
    None). StockFileError lists every problem (missing file and bad YAML included); the stock is
    unchanged then."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StockFileError([StockFileIssue(source, ROOT, "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise StockFileError([StockFileIssue(source, ROOT, f"cannot read file: {exc}")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        issue = StockFileIssue(source, ROOT, f"YAML error{yaml_error_at(exc)}")
        raise StockFileError([issue]) from None
    except yaml.YAMLError as exc:
        raise StockFileError([StockFileIssue(source, ROOT, f"YAML error: {exc}")]) from None
    return parse_vault_stock(data, source, catalogue, stock)


def parse_vault_stock(
    data: object, source: str, catalogue: Catalogue, stock: VaultStock | None = None
) -> VaultStock:
    """Validate already-parsed stock data and receive every lot into `stock` (all or none)."""
    stock = VaultStock(catalogue) if stock is None else stock
    issues: list[StockFileIssue] = []

    def issue(where: str, message: str) -> None:
        issues.append(StockFileIssue(source, where, message))

    if not isinstance(data, Mapping):
        issue(ROOT, f"must be a mapping with `lots:`, not {describe_value(data)}")
        raise StockFileError(issues)
    for key in data:
        if key != "lots":
            issue(join_path(ROOT, key), "unknown key; known: lots")
    entries = data.get("lots")
    if not isinstance(entries, list) or not entries:
        issue(join_path(ROOT, "lots"), f"must be a non-empty list, not {describe_value(entries)}")
        raise StockFileError(issues)
    receipts: list[tuple[Lot, int, date]] = []
    for i, entry in enumerate(entries):
        receipt = _parse_lot(entry, f"lots[{i}]", catalogue, issue)
        if receipt is not None:
            receipts.append(receipt)
    if not issues:
        # Receive into a scratch stock first: a lot refused half-way (given twice with
        # another expiry, expired on receipt) must leave the caller's stock untouched.
        scratch = VaultStock(catalogue)
        for i, (lot, units, day) in enumerate(receipts):
            try:
                scratch.receive(lot, units, day)
            except DomainError as exc:
                issue(f"lots[{i}]", str(exc))
    if issues:
        raise StockFileError(issues)
    for lot, units, day in receipts:
        stock.receive(lot, units, day)
    return stock


def _parse_lot(
    entry: object, where: str, catalogue: Catalogue, issue: _Report
) -> tuple[Lot, int, date] | None:
    if not isinstance(entry, Mapping):
        issue(where, f"must be a mapping describing a lot, not {describe_value(entry)}")
        return None
    ok = True
    for key in entry:
        if key not in _LOT_KEYS:
            close = difflib.get_close_matches(str(key), list(_LOT_KEYS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            issue(join_path(where, key), f"unknown key{hint}; known: {', '.join(_LOT_KEYS)}")
            ok = False
    for key, required in _LOT_KEYS.items():
        if required and key not in entry:
            issue(join_path(where, key), "missing")
            ok = False
    if not ok:
        return None
    code = entry["drug_code"]
    drug = catalogue.find(code) if isinstance(code, str) else None
    if drug is None:
        hint = " (quote it: digits alone are a number to YAML)" if isinstance(code, int) else ""
        issue(
            join_path(where, "drug_code"), f"{describe_value(code)} is not in the catalogue{hint}"
        )
        return None
    expiry = _day(entry["expiry"], join_path(where, "expiry"), issue, label=True)
    received = _day(entry["received"], join_path(where, "received"), issue, label=False)
    units = entry["units"]
    if type(units) is not int or units < 1:
        issue(
            join_path(where, "units"), f"must be a whole number >= 1, not {describe_value(units)}"
        )
        return None
    manufacturer = entry.get("manufacturer", drug.manufacturer)
    if expiry is None or received is None:
        return None
    try:
        lot = Lot(drug.code, entry["lot"], expiry, manufacturer)
    except DomainError as exc:
        field = getattr(exc, "field", "")
        issue(join_path(where, field) if field else where, getattr(exc, "reason", str(exc)))
        return None
    return lot, units, received


def _day(value: object, where: str, issue: _Report, *, label: bool) -> date | None:
    """A date from YAML: a date YAML parsed itself, or (for an expiry label) text."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if label and isinstance(value, str):
        try:
            return expiry_from_label(value)
        except DomainError as exc:
            issue(where, getattr(exc, "reason", str(exc)))
            return None
    wanted = "YYYY-MM-DD or YYYY-MM" if label else "YYYY-MM-DD"
    issue(where, f"must be a date ({wanted}), not {describe_value(value)}")
    return None


def build_custody_book(
    sources: CustodySources,
    ledger: LedgerSink,
    *,
    settings: LifecycleSettings | None = None,
    hashing: PinHashing | None = None,
) -> CustodyBook:
    """A `CustodyBook` over the catalogue, staff and stock files of `sources`, writing to
    `ledger`. `hashing` overrides the PIN hashing (tests use a cheap one; the default is the
    slow scrypt of `fleet.custody.people`). Raises CatalogueError, StaffFileError or
    StockFileError naming the file and the place of every problem."""
    catalogue = load_catalogue(sources.catalogue)
    directory = StaffDirectory() if hashing is None else StaffDirectory(hashing=hashing)
    load_staff(sources.staff, directory)
    stock = load_vault_stock(sources.stock, catalogue)
    return CustodyBook(catalogue, stock, directory, ledger, settings=settings)


__all__ = [
    "DEMO_DATA",
    "CustodySources",
    "StockFileError",
    "StockFileIssue",
    "build_custody_book",
    "load_vault_stock",
    "parse_vault_stock",
]
