"""The expiry sweep (效期预警): which vault lots are near expiry or expired, and which of those
have not been alerted yet.

Pure: the stock, the catalogue and today's date are arguments; `schedulers.jobs` runs the sweep
daily. Levels, most urgent first: `EXPIRED` (the day after the expiry date: stock is blocked
from issue, `fleet.custody.stock`), then one `"<n>_DAYS"` level per warning threshold, smallest
first (`7_DAYS` when 0..7 days are left, `30_DAYS` when 8..30 are left, with the default
thresholds). `days_left` counts whole days to the expiry date: 0 on the expiry day itself, the
last day the lot may still be issued.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime

from fleet.custody.catalogue import Catalogue, Drug
from fleet.custody.stock import VaultStock
from fleet.domain.errors import InvalidArgument

EXPIRED = "EXPIRED"
DEFAULT_WARN_DAYS: tuple[int, ...] = (30, 7)


def level_name(days: int) -> str:
    """The level of a warning threshold: `30_DAYS` for 30."""
    return f"{days}_DAYS"


@dataclass(frozen=True, slots=True)
class ExpiryAlert:
    """A lot with stock that has reached an expiry level (see the module docstring)."""

    drug: Drug
    lot: str
    expiry: date
    quantity: int  # units on hand
    days_left: int  # negative once expired
    level: str  # EXPIRED or "<n>_DAYS"

    @property
    def drug_code(self) -> str:
        return self.drug.code

    @property
    def expired(self) -> bool:
        return self.level == EXPIRED

    @property
    def message(self) -> str:
        """One line for people, e.g. `lot F2403 of Fentanyl ... : 12 ampoule expire on ...`."""
        what = f"lot {self.lot} of {self.drug.describe()}: {self.quantity} {self.drug.unit}"
        when = self.expiry.isoformat()
        if self.expired:
            return f"{what} expired on {when}, blocked from issue; arrange supervised destruction"
        days = "today" if self.days_left == 0 else f"in {self.days_left} days"
        return f"{what} expire {days} ({when})"


def _thresholds(warn_days: Iterable[int]) -> tuple[int, ...]:
    """The warning thresholds, smallest (most urgent) first; InvalidArgument("warn_days")."""
    days = tuple(warn_days)
    for d in days:
        if type(d) is not int or d < 0:
            raise InvalidArgument("warn_days", f"must be whole days >= 0, got {d!r}")
    if len(set(days)) != len(days):
        raise InvalidArgument("warn_days", f"has a threshold twice: {days}")
    return tuple(sorted(days))


def _level(days_left: int, thresholds: Sequence[int]) -> tuple[int, str] | None:
    """(urgency rank, level) for a lot with `days_left`, rank 0 the most urgent; None when the
    lot is further from expiry than every threshold."""
    if days_left < 0:
        return 0, EXPIRED
    for rank, days in enumerate(thresholds, start=1):
        if days_left <= days:
            return rank, level_name(days)
    return None


def _ranked_alerts(
    stock: VaultStock, catalogue: Catalogue, today: date, thresholds: Sequence[int]
) -> list[tuple[int, ExpiryAlert]]:
    found: list[tuple[int, ExpiryAlert]] = []
    for held in stock.snapshot():
        if held.on_hand <= 0:
            continue
        days_left = (held.expiry - today).days
        level = _level(days_left, thresholds)
        if level is None:
            continue
        rank, name = level
        drug = catalogue.get(held.drug_code)
        alert = ExpiryAlert(drug, held.lot.lot, held.expiry, held.on_hand, days_left, name)
        found.append((rank, alert))
    found.sort(key=lambda ra: (ra[1].days_left, ra[1].drug.code, ra[1].lot))
    return found


def _check_today(today: object) -> date:
    # datetime is a date too: refuse it, or a time of day would slip into the day count.
    if not isinstance(today, date) or isinstance(today, datetime):
        raise InvalidArgument("today", f"must be a date (datetime.date), got {today!r}")
    return today


def expiry_alerts(
    stock: VaultStock,
    catalogue: Catalogue,
    today: date,
    warn_days: Iterable[int] = DEFAULT_WARN_DAYS,
) -> list[ExpiryAlert]:
    """Every lot with units on hand that has reached a level `today`, each at the most urgent
    level it has reached, soonest expiry first (then drug code and lot).

    Raises InvalidArgument for a bad `today` or `warn_days`, NotFound for a stocked drug the
    catalogue lacks.
    """
    thresholds = _thresholds(warn_days)
    today = _check_today(today)
    return [alert for _, alert in _ranked_alerts(stock, catalogue, today, thresholds)]


class ExpirySweep:
    """A daily sweep that alerts each lot once per level: a lot at 30 days is reported once at
    `30_DAYS`, again when it reaches `7_DAYS` and once more when it expires. A lot first seen at
    a more urgent level (received with 5 days left, or a missed day) is reported only there.

    `due` says what to send without remembering it; `mark_sent` remembers it once delivered, so
    alerts whose delivery failed come again on the next run. `run` does both. Memory is one
    entry per lot alerted, and the stock never forgets a lot, so it grows with the stock.
    A restarted service starts with an empty memory (or `sent` restored) and alerts again.
    """

    def __init__(
        self,
        catalogue: Catalogue,
        warn_days: Iterable[int] = DEFAULT_WARN_DAYS,
        sent: Mapping[tuple[str, str], str] | None = None,
    ) -> None:
        self.catalogue = catalogue
        self.thresholds = _thresholds(warn_days)
        self._ranks = {EXPIRED: 0} | {
            level_name(d): rank for rank, d in enumerate(self.thresholds, start=1)
        }
        self._sent: dict[tuple[str, str], int] = {}
        for key, level in (sent or {}).items():
            if level not in self._ranks:
                raise InvalidArgument("sent", f"unknown level {level!r} for lot {key}")
            self._sent[key] = self._ranks[level]

    @property
    def sent(self) -> dict[tuple[str, str], str]:
        """(drug code, lot) -> the most urgent level alerted, to persist and pass back as
        `sent` after a restart."""
        names = {rank: name for name, rank in self._ranks.items()}
        return {key: names[rank] for key, rank in self._sent.items()}

    def due(self, stock: VaultStock, today: date) -> list[ExpiryAlert]:
        """The alerts of `today` at a level more urgent than any sent for their lot."""
        today = _check_today(today)
        return [
            alert
            for rank, alert in _ranked_alerts(stock, self.catalogue, today, self.thresholds)
            if rank < self._sent.get((alert.drug_code, alert.lot), len(self._ranks))
        ]

    def mark_sent(self, alerts: Iterable[ExpiryAlert]) -> None:
        """Remember `alerts` as delivered."""
        alerts = list(alerts)
        for alert in alerts:  # all checked first, so a bad one changes nothing
            if alert.level not in self._ranks:
                raise InvalidArgument("alerts", f"level {alert.level!r} is not one of this sweep's")
        for alert in alerts:
            rank = self._ranks[alert.level]
            key = (alert.drug_code, alert.lot)
            self._sent[key] = min(rank, self._sent.get(key, rank))

    def run(self, stock: VaultStock, today: date) -> list[ExpiryAlert]:
        """`due`, remembered as sent at once (for callers that cannot fail to deliver)."""
        alerts = self.due(stock, today)
        self.mark_sent(alerts)
        return alerts
