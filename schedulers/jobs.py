"""Wires the pure planners of `schedulers/` to APScheduler 3: the only module that imports it.

Why `AsyncIOScheduler` and not `BackgroundScheduler`: the service runs on one asyncio event loop
(`fleet.bootstrap`), and the state a job reads (the vault stock, the dispatcher core) belongs to
that loop's single writer. The AsyncIO scheduler keeps its timer on that loop and runs `async
def` jobs on it, between the bus's commands, so a job reads consistent state with no locks and
hands its results on (to the bus, later) without crossing threads. A BackgroundScheduler would run
jobs in a thread pool, racing the loop.

Jobs are coroutine functions on purpose: APScheduler's asyncio executor runs plain functions in a
thread pool instead. Keep them short (a planner call and a hand-over); anything long belongs in
a worker like the optimizer's.

APScheduler fires on the wall clock. The job asks the injected `Clock` for today's date, so with
the real clock both agree; the digital twin running on a virtual or scaled clock should call the
planners (`ExpirySweep`) on its own day boundaries instead of using this scheduler.
"""

from __future__ import annotations

import inspect
import logging
from asyncio import AbstractEventLoop
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, time, tzinfo
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from fleet.clock import Clock
from fleet.custody.stock import VaultStock, local_date
from schedulers.expiry import ExpiryAlert, ExpirySweep

log = logging.getLogger(__name__)

DEFAULT_SWEEP_TIME = time(6, 0)  # before the day shift: the pharmacy sees alerts on arrival
EXPIRY_SWEEP_ID = "expiry-sweep"
# A run delayed by a stalled loop or a suspended laptop still happens if at most this late.
MISFIRE_GRACE_S = 3600

AlertSink = Callable[[Sequence[ExpiryAlert]], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class ScheduledJob:
    """One recurring job: a coroutine function run on the service's event loop, when `trigger`
    (an APScheduler trigger) fires; also once at start-up when `run_on_start`."""

    id: str
    func: Callable[[], Awaitable[None]]
    trigger: Any  # apscheduler.triggers.base.BaseTrigger (the library has no type hints)
    run_on_start: bool = False


def daily_at(at: time, timezone: tzinfo) -> CronTrigger:
    """A cron trigger firing every day at `at`, local time in `timezone`."""
    return CronTrigger(hour=at.hour, minute=at.minute, second=at.second, timezone=timezone)


def every_minutes(minutes: float) -> IntervalTrigger:
    """A trigger firing every `minutes` (the custody ledger's signed checkpoints)."""
    if not minutes > 0:
        raise ValueError(f"every_minutes: must be > 0, got {minutes!r}")
    return IntervalTrigger(seconds=minutes * 60.0)


def parse_time_of_day(text: str) -> time:
    """`"06:00"` or `"06:00:30"` as a time of day (for settings); ValueError otherwise."""
    try:
        at = time.fromisoformat(text.strip())
    except (ValueError, AttributeError):
        raise ValueError(f"expected a time of day such as 06:00, got {text!r}") from None
    if at.tzinfo is not None or at.microsecond:
        raise ValueError(f"expected a local time of day without zone or fraction, got {text!r}")
    return at


def expiry_sweep_job(
    *,
    sweep: ExpirySweep,
    stock: Callable[[], VaultStock],
    clock: Clock,
    timezone: tzinfo,
    on_alerts: AlertSink,
    at: time = DEFAULT_SWEEP_TIME,
    trigger: Any = None,
    run_on_start: bool = False,
) -> ScheduledJob:
    """The daily expiry sweep: at `at` (hospital time in `timezone`), or when `trigger` fires
    if one is given (tests), hand the sweep's new alerts for today to `on_alerts` (which may be
    a coroutine function). Alerts count as sent only after `on_alerts` returns, so alerts
    whose delivery raised come again on the next run. `stock` gives the current vault stock.
    """

    async def run_expiry_sweep() -> None:
        today = local_date(clock, timezone)
        alerts = sweep.due(stock(), today)
        if not alerts:
            return
        result = on_alerts(alerts)
        if inspect.isawaitable(result):
            await result
        sweep.mark_sent(alerts)
        log.info("expiry sweep %s: %d new alerts", today.isoformat(), len(alerts))

    return ScheduledJob(
        id=EXPIRY_SWEEP_ID,
        func=run_expiry_sweep,
        trigger=trigger if trigger is not None else daily_at(at, timezone),
        run_on_start=run_on_start,
    )


def build_scheduler(
    jobs: Iterable[ScheduledJob],
    *,
    timezone: tzinfo,
    event_loop: AbstractEventLoop | None = None,
) -> AsyncIOScheduler:
    """An AsyncIO scheduler holding `jobs`, not started: call `start()` on the running loop
    (or pass `event_loop`) and `shutdown()` when the service stops.

    Every job runs one instance at a time, and runs it once for several missed fire times.
    ValueError for two jobs with one id.
    """
    scheduler = AsyncIOScheduler(
        timezone=timezone,
        event_loop=event_loop,
        job_defaults={
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": MISFIRE_GRACE_S,
        },
    )
    seen: set[str] = set()
    for job in jobs:
        if job.id in seen:
            raise ValueError(f"two scheduled jobs with the id {job.id!r}")
        seen.add(job.id)
        extra: dict[str, Any] = {}
        if job.run_on_start:
            # APScheduler runs a job whose next run time has passed as soon as it starts.
            extra["next_run_time"] = datetime.now(timezone)
        scheduler.add_job(job.func, trigger=job.trigger, id=job.id, name=job.id, **extra)
    return scheduler
