"""A real APScheduler on the running event loop runs the expiry sweep and hands its alerts to
the callback; jobs fire soon through an injected trigger or the start-up run, and the scheduler
shuts down cleanly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from fleet.clock import ManualClock
from fleet.custody.catalogue import Catalogue, ControlClass, DosageForm, Drug
from fleet.custody.stock import Lot, VaultStock
from schedulers.expiry import ExpiryAlert, ExpirySweep
from schedulers.jobs import (
    EXPIRY_SWEEP_ID,
    ScheduledJob,
    build_scheduler,
    daily_at,
    expiry_sweep_job,
    parse_time_of_day,
)

TZ = ZoneInfo("Asia/Shanghai")
TODAY = date(2025, 3, 1)
NOON = datetime(2025, 3, 1, 12, 0, tzinfo=TZ).timestamp()
DAY_S = 86_400.0
WAIT_S = 5.0

FEN = Drug(
    code="FEN",
    name="Fentanyl citrate injection",
    form=DosageForm.INJECTION,
    strength="50 µg/ml, 2 ml",
    unit="ampoule",
    control_class=ControlClass.NARCOTIC,
    manufacturer="Demo Pharma",
    returns_empty_container=True,
)
CATALOGUE = Catalogue([FEN])


def vault() -> VaultStock:
    stock = VaultStock(CATALOGUE)
    stock.receive(Lot("FEN", "SOON", TODAY + timedelta(days=5), "Demo Pharma"), 4, TODAY)
    stock.receive(Lot("FEN", "LATER", TODAY + timedelta(days=20), "Demo Pharma"), 6, TODAY)
    stock.receive(Lot("FEN", "FINE", TODAY + timedelta(days=400), "Demo Pharma"), 9, TODAY)
    return stock


class Inbox:
    """A fake alert sink: keeps every batch and wakes a waiting test."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[str, str]]] = []
        self._changed = asyncio.Event()

    def put(self, alerts: Sequence[ExpiryAlert]) -> None:
        self.batches.append([(a.lot, a.level) for a in alerts])
        self._changed.set()

    async def wait_for(self, n: int) -> None:
        """Until `n` batches have arrived (fails after WAIT_S)."""
        async with asyncio.timeout(WAIT_S):
            while len(self.batches) < n:
                self._changed.clear()
                await self._changed.wait()


@asynccontextmanager
async def running(jobs: list[ScheduledJob]) -> AsyncIterator[AsyncIOScheduler]:
    scheduler = build_scheduler(jobs, timezone=TZ)
    scheduler.start()
    try:
        yield scheduler
    finally:
        scheduler.shutdown(wait=False)
        await asyncio.sleep(0)  # the AsyncIO scheduler shuts down on its loop's next turn
        assert not scheduler.running


def job(
    inbox_put: Callable[[Sequence[ExpiryAlert]], object],
    clock: ManualClock,
    stock: VaultStock,
    **kwargs: object,
) -> ScheduledJob:
    return expiry_sweep_job(
        sweep=ExpirySweep(CATALOGUE),
        stock=lambda: stock,
        clock=clock,
        timezone=TZ,
        on_alerts=inbox_put,  # type: ignore[arg-type]
        **kwargs,  # type: ignore[arg-type]
    )


async def test_daily_job_runs_at_start_up_and_then_at_the_configured_time() -> None:
    inbox = Inbox()
    sweep_job = job(inbox.put, ManualClock(NOON), vault(), at=time(6, 30), run_on_start=True)
    async with running([sweep_job]) as scheduler:
        await inbox.wait_for(1)
        assert inbox.batches == [[("SOON", "7_DAYS"), ("LATER", "30_DAYS")]]
        scheduled = scheduler.get_job(EXPIRY_SWEEP_ID)
        assert scheduled is not None
        nxt = scheduled.next_run_time.astimezone(TZ)
        assert (nxt.hour, nxt.minute, nxt.second) == (6, 30, 0)
        assert timedelta(0) < nxt - datetime.now(TZ) <= timedelta(days=1)


async def test_injected_trigger_sweeps_repeatedly_alerting_each_level_once() -> None:
    inbox = Inbox()
    clock = ManualClock(NOON)
    trigger = IntervalTrigger(seconds=0.05, timezone=TZ)
    async with running([job(inbox.put, clock, vault(), trigger=trigger)]):
        await inbox.wait_for(1)
        assert inbox.batches == [[("SOON", "7_DAYS"), ("LATER", "30_DAYS")]]
        await asyncio.sleep(0.3)  # several more runs on the same day: nothing new
        assert len(inbox.batches) == 1
        clock.advance_to(NOON + 6 * DAY_S)  # SOON expired yesterday
        await inbox.wait_for(2)
        assert inbox.batches[1] == [("SOON", "EXPIRED")]
        clock.advance_to(NOON + 14 * DAY_S)  # LATER has 6 days left
        await inbox.wait_for(3)
        assert inbox.batches[2] == [("LATER", "7_DAYS")]


async def test_an_async_callback_is_awaited_and_a_failed_delivery_comes_again() -> None:
    delivered: list[list[str]] = []
    attempts = 0
    done = asyncio.Event()

    async def flaky(alerts: Sequence[ExpiryAlert]) -> None:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0)
        if attempts == 1:
            raise ConnectionError("alert service down")
        delivered.append([a.lot for a in alerts])
        done.set()

    trigger = IntervalTrigger(seconds=0.05, timezone=TZ)
    async with running([job(flaky, ManualClock(NOON), vault(), trigger=trigger)]):
        async with asyncio.timeout(WAIT_S):
            await done.wait()
        await asyncio.sleep(0.2)
    assert delivered == [["SOON", "LATER"]]  # once, after the failed attempt
    assert attempts == 2


def test_jobs_need_distinct_ids() -> None:
    one = ScheduledJob("x", _nothing, daily_at(time(6), TZ))
    with pytest.raises(ValueError, match="'x'"):
        build_scheduler([one, one], timezone=TZ)


async def _nothing() -> None:
    return None


@pytest.mark.parametrize(
    ("text", "expected"), [("06:00", time(6)), (" 23:15:30 ", time(23, 15, 30))]
)
def test_parse_time_of_day(text: str, expected: time) -> None:
    assert parse_time_of_day(text) == expected


@pytest.mark.parametrize("text", ["6 am", "25:00", "06:00+08:00", "06:00:00.5", ""])
def test_parse_time_of_day_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time_of_day(text)
