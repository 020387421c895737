"""Assembles the service from a `Settings` object: the one place where the parts meet.

`Service.start()` loads the building, opens the store, builds the clock, the dispatcher core and
its bus (with a one-process worker pool for the optimizer), then starts the gRPC server and the
metrics endpoint. `stop()` takes them down in reverse order and closes the store.

With `settings.custody`, the controlled-drug custody book is built from the catalogue, staff and
stock files with its ledger in the same database, behind a `CustodyDesk` that hands commands to
the core (`core.handle`, on the bus task) and takes the fleet's reports (robots waiting at secure
stations, order changes); CustodyService is served over a `DeskCustodyRunner`, and a timer
lets the desk act on recipients who do not come. The book's working state (cases, vault stock,
counters) is saved in the same database after every step (`fleet.store.custody_state`) and
restored at start instead of the opening stock file; the desk's trips are rebuilt from the
fleet's orders.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import multiprocessing
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any
from zoneinfo import ZoneInfo

from fleet.api.custody_runner import CustodyStateKeeper, DeskCustodyRunner
from fleet.api.server import GrpcServer, build_server
from fleet.building.graph import BuildingGraph
from fleet.building.loader import load_building
from fleet.clock import Clock, ScaledClock, SystemClock
from fleet.config import METRICS_OFF, Settings
from fleet.custody.catalogue import load_catalogue
from fleet.custody.desk import CustodyDesk
from fleet.custody.keys import load_signing_key
from fleet.custody.lifecycle import TERMINAL_STATES, ClockedSink, CustodyBook
from fleet.custody.people import PinHashing, StaffDirectory, load_staff
from fleet.custody.setup import CustodySources, build_custody_book
from fleet.custody.state import join_state
from fleet.dispatch import messages as m
from fleet.dispatch.bus import AsyncBus, DispatcherStopped
from fleet.dispatch.core import CoreConfig, FleetCore
from fleet.dispatch.ports import FleetStore
from fleet.metrics import FleetMetrics, MetricsEndpoint, run_refresher, serve_metrics
from fleet.planning import solve
from fleet.store import open_store
from fleet.store.custody_state import CustodyStateStore
from fleet.store.ledger import LedgerStore, open_ledger
from schedulers.expiry import ExpiryAlert, ExpirySweep
from schedulers.jobs import ScheduledJob, build_scheduler, every_minutes, expiry_sweep_job

log = logging.getLogger(__name__)

# Cheap PIN hashing for `custody_fast_pins` (the demo staff in demos and tests): the production
# scrypt costs tens of milliseconds per authentication, on the core's task.
FAST_PIN_HASHING = PinHashing(cost=(1024, 8, 1))
# Wall seconds between the custody desk's checks of recipients who did not come.
CUSTODY_TICK_S = 2.0


def make_clock(settings: Settings) -> Clock:
    """The wall clock, or a ScaledClock when the time scale is not 1."""
    if settings.time_scale == 1.0:
        return SystemClock()
    return ScaledClock(settings.time_scale)


def make_solver_pool() -> ProcessPoolExecutor:
    """A one-worker process pool for the optimizer.

    Never forked from this process (gRPC threads are running): forkserver where the platform
    has it, with the planner preloaded so a new worker starts at once, spawn elsewhere.
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        forkserver = multiprocessing.get_context("forkserver")
        forkserver.set_forkserver_preload(["fleet.planning"])
        return ProcessPoolExecutor(max_workers=1, mp_context=forkserver)
    return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))


class Service:
    """The running orchestrator: store, core, bus, gRPC server and metrics."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._started = False
        self._store: FleetStore | None = None
        self._core: FleetCore | None = None
        self._bus: AsyncBus | None = None
        self._pool: ProcessPoolExecutor | None = None
        self._grpc: GrpcServer | None = None
        self._metrics_endpoint: MetricsEndpoint | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._ledger: LedgerStore | None = None
        self._desk: CustodyDesk | None = None
        self._custody_runner: DeskCustodyRunner | None = None
        self._custody_alerts: list[m.RaiseAlert] = []
        self._custody_ticker: asyncio.Task[None] | None = None
        self._scheduler: Any = None  # APScheduler's AsyncIOScheduler (untyped library)
        self.metrics = FleetMetrics()

    # ---- what tests and the command line look at ----------------------------------------------

    @property
    def core(self) -> FleetCore:
        """The dispatcher core (read it only on the service's event loop)."""
        if self._core is None:
            raise RuntimeError("the service is not started")
        return self._core

    @property
    def bus(self) -> AsyncBus:
        """The bus that owns the core."""
        if self._bus is None:
            raise RuntimeError("the service is not started")
        return self._bus

    @property
    def custody_desk(self) -> CustodyDesk | None:
        """The custody desk (None unless `settings.custody`); read it on the service's loop."""
        return self._desk

    @property
    def grpc_port(self) -> int:
        """The port the gRPC server listens on."""
        if self._grpc is None:
            raise RuntimeError("the service is not started")
        return self._grpc.port

    @property
    def metrics_port(self) -> int | None:
        """The port of `/metrics`, or None when metrics are off."""
        return self._metrics_endpoint.port if self._metrics_endpoint is not None else None

    # ---- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Build everything from the settings and start serving.

        Raises (after undoing what was started) for a bad map (`MapError`), a bad database URL
        (ValueError), an unreachable database or a port that cannot be bound.
        """
        if self._started:
            raise RuntimeError("the service is already started")
        self._started = True
        s = self.settings
        try:
            core = await asyncio.to_thread(self._build_core)
            self._pool = make_solver_pool()
            self._bus = AsyncBus(
                core,
                functools.partial(solve, time_limit_s=s.solve_time_limit_s),
                executor=self._pool,
                tick_interval_s=s.tick_interval_s,
                on_solved=self.metrics.observe_solve,
            )
            self._bus.router.watchers.append(self.metrics.on_order_changed)
            runner = await self._build_custody(core, self._bus) if s.custody else None
            self._bus.start()
            for alert in self._custody_alerts:
                await self._bus.submit(alert)
            if self._desk is not None and runner is not None:
                self._custody_ticker = asyncio.create_task(
                    self._tick_custody(runner), name="fleet-custody"
                )
                self._scheduler = self._custody_scheduler(core, self._bus, self._desk)
                self._scheduler.start()
            self._grpc = build_server(self._bus, core, s, custody=runner)
            await self._grpc.start()
            self.metrics.refresh(core)
            self._refresher = asyncio.create_task(
                run_refresher(self.metrics, core), name="fleet-metrics"
            )
            if s.metrics_port != METRICS_OFF:
                self._metrics_endpoint = await serve_metrics(
                    self.metrics.registry, s.host, s.metrics_port
                )
        except BaseException:
            await self.stop(grace=0)
            raise
        log.info(
            "serving %s on %s:%d (metrics: %s)",
            core.building.name,
            s.host,
            self.grpc_port,
            self.metrics_port if self.metrics_port is not None else "off",
        )

    def _build_core(self) -> FleetCore:
        s = self.settings
        building = load_building(s.map_path)
        graph = BuildingGraph(building)
        store = open_store(s.database_url)
        self._store = store
        self._core = FleetCore(
            building,
            graph,
            store,
            make_clock(s),
            CoreConfig(
                offline_timeout_s=s.offline_timeout_s,
                pickup_defer_margin_s=s.defer_margin_min * 60.0 or None,
            ),
        )
        return self._core

    async def _build_custody(self, core: FleetCore, bus: AsyncBus) -> DeskCustodyRunner:
        """The custody book (ledger in the service's database), its desk wired to the core and
        the bus, and the runner CustodyService uses. The book is restored from its saved state
        when the database has one (`fleet.store.custody_state`; the catalogue and staff still
        come from their files, the vault from the state, not the opening stock file), and the
        desk's trips are rebuilt from the fleet's orders. Raises CatalogueError,
        StaffFileError, StockFileError, LedgerError or CustodyStateError naming what is
        wrong."""
        s = self.settings
        sources = CustodySources(s.custody_catalogue, s.custody_staff, s.custody_stock)
        hashing = FAST_PIN_HASHING if s.custody_fast_pins else None

        def build() -> tuple[LedgerStore, CustodyDesk, CustodyStateKeeper]:
            ledger = open_ledger(s.database_url)
            try:
                desk, keeper = self._open_custody(core, ledger, sources, hashing)
            except BaseException:
                ledger.close()
                raise
            return ledger, desk, keeper

        # Off the loop: hashing every staff PIN takes a while with the production cost. The
        # bus does not run yet: the core is read here on this thread alone.
        ledger, desk, keeper = await asyncio.to_thread(build)
        self._ledger, self._desk = ledger, desk
        # The fleet's reports reach the desk on the bus task, where its steps run too.
        bus.router.custody_watchers.append(desk.on_secure_stop)
        bus.router.watchers.append(desk.on_order)
        runner = DeskCustodyRunner(bus, desk, core.clock, ledger, keeper)
        self._custody_runner = runner
        return runner

    def _open_custody(
        self,
        core: FleetCore,
        ledger: LedgerStore,
        sources: CustodySources,
        hashing: PinHashing | None,
    ) -> tuple[CustodyDesk, CustodyStateKeeper]:
        """The book (restored, or new from the files), its desk with the trips rebuilt, and
        the keeper of its state; the state is saved once before anything runs. Alerts for a
        saved state that does not match the ledger go to `_custody_alerts` (raised once the
        bus runs). Runs on a worker thread before the bus starts."""
        states = CustodyStateStore(ledger.engine)
        saved = states.load()
        head = ledger.head().seq
        sink = ClockedSink(ledger, core.clock)
        if saved is None:
            book = build_custody_book(sources, sink, hashing=hashing)
            keeper = CustodyStateKeeper(states, ledger_seq=head)
            if head:
                message = (
                    f"no saved custody state in this database, but its ledger holds {head} "
                    f"records: the book starts from the opening stock file {sources.stock}, "
                    f"without the cases of ledger records 1..{head}; check them against the "
                    "ledger"
                )
                log.warning(message)
                self._custody_alerts.append(
                    m.RaiseAlert(
                        "CUSTODY_STATE_MISSING", m.AlertSeverity.WARNING, "custody", message
                    )
                )
        else:
            catalogue = load_catalogue(sources.catalogue)
            directory = StaffDirectory() if hashing is None else StaffDirectory(hashing=hashing)
            load_staff(sources.staff, directory)
            meta = saved["meta"]
            book = CustodyBook.restore(join_state(meta, saved["rows"]), catalogue, directory, sink)
            saved_seq = int(meta.get("ledger_seq", 0))
            keeper = CustodyStateKeeper(states, ledger_seq=saved_seq, saved=saved)
            self._check_state_against_ledger(book, ledger, saved_seq, head)
            log.info(
                "custody book restored: %d cases (%d open), ledger at record %d",
                len(book.cases()),
                sum(c.state not in TERMINAL_STATES for c in book.cases()),
                head,
            )
        desk = CustodyDesk(book, core.handle)
        open_cases = [c.id for c in book.cases() if c.state not in TERMINAL_STATES]
        orders = []
        for order_id in states.custody_orders(open_cases) if open_cases else []:
            order = core.orders.get(order_id) or core.store.get_order(order_id)
            if order is not None:
                orders.append(order)
        moved = desk.rebuild_trips(orders)
        if moved:
            log.warning(
                "custody cases moved on by what their robots did before the restart: %s",
                ", ".join(moved),
            )
        delta = keeper.capture(book)
        if delta is not None:
            states.save(*delta, core.clock.now())
        return desk, keeper

    def _check_state_against_ledger(
        self, book: CustodyBook, ledger: LedgerStore, saved_seq: int, head: int
    ) -> None:
        """A saved state must reflect the ledger up to its head. Records after the state (a
        crash between a step's ledger commit and its save) are named in a CRITICAL alert, not
        repaired: the pharmacy checks those cases against the ledger."""
        if head == saved_seq:
            return
        if head < saved_seq:
            message = (
                f"the saved custody state reflects ledger records up to {saved_seq}, but the "
                f"ledger ends at record {head}: records are missing from the ledger; run "
                "`fleet custody verify` and check the state against it"
            )
            code = "CUSTODY_LEDGER_BEHIND_STATE"
        else:
            by_order = {c.ledger_order_id: c.id for c in book.cases()}
            events = list(ledger.iter_events(saved_seq + 1))
            cases = sorted({by_order.get(e.order_id, e.order_id) for e in events})
            kinds = ", ".join(f"{e.seq} {e.event_type} {e.drug_code}/{e.lot}" for e in events[:20])
            more = f" and {len(events) - 20} more" if len(events) > 20 else ""
            message = (
                f"ledger records {saved_seq + 1}..{head} are not reflected in the saved custody "
                f"state (saved at record {saved_seq}); check case(s) {', '.join(cases)} "
                f"against the ledger: {kinds}{more}"
            )
            code = "CUSTODY_STATE_BEHIND_LEDGER"
        log.error(message)
        self._custody_alerts.append(
            m.RaiseAlert(code, m.AlertSeverity.CRITICAL, "custody", message)
        )

    def _custody_scheduler(self, core: FleetCore, bus: AsyncBus, desk: CustodyDesk) -> Any:
        """The custody's recurring work (APScheduler): the daily expiry sweep of the vault (and
        once at start): lots 30 and 7 days from expiry, and expired lots (which the book never
        issues), become alerts for the operations centre (OperationsService.ListAlerts /
        WatchAlerts); with a signing key, a signed checkpoint of the ledger's head every
        `custody_checkpoint_min` minutes (and at start)."""
        zone = ZoneInfo(core.building.timezone)

        async def raise_alerts(alerts: Sequence[ExpiryAlert]) -> None:
            for alert in alerts:
                severity = (
                    m.AlertSeverity.CRITICAL
                    if alert.expired
                    else m.AlertSeverity.WARNING
                    if alert.days_left <= 7
                    else m.AlertSeverity.INFO
                )
                await bus.submit(
                    m.RaiseAlert(
                        f"LOT_{alert.level}",
                        severity,
                        f"{alert.drug_code}/{alert.lot}",
                        alert.message,
                    )
                )

        job = expiry_sweep_job(
            sweep=ExpirySweep(desk.book.catalogue),
            stock=lambda: desk.book.stock,
            clock=core.clock,
            timezone=zone,
            on_alerts=raise_alerts,
            run_on_start=True,
        )
        jobs = [job]
        key_path = self.settings.custody_signing_key
        ledger = self._ledger
        if key_path is not None and ledger is not None:
            key = load_signing_key(key_path)  # raises naming the file when it is no key

            async def sign_checkpoint() -> None:
                # The head is read under the append lock: off the loop, like any DB commit.
                checkpoint = await asyncio.to_thread(ledger.checkpoint, key, core.clock)
                log.info("custody ledger checkpoint at seq %d", checkpoint.seq)

            jobs.append(
                ScheduledJob(
                    id="custody-checkpoint",
                    func=sign_checkpoint,
                    trigger=every_minutes(self.settings.custody_checkpoint_min),
                    run_on_start=True,
                )
            )
        return build_scheduler(jobs, timezone=zone)

    @staticmethod
    async def _tick_custody(runner: DeskCustodyRunner) -> None:
        """Every few seconds: the desk pages alternates and sends robots back for recipients
        who did not come; the book's state is saved with it (what robots moved meanwhile)."""
        while True:
            await asyncio.sleep(CUSTODY_TICK_S)
            try:
                await runner.tick()
            except DispatcherStopped:
                return
            except Exception:
                log.exception("custody desk tick failed")

    async def stop(self, grace: float | None = None) -> None:
        """Stop serving (open calls get `grace` seconds, default from the settings), stop the
        core and the optimizer worker, close the store. Safe to call more than once."""
        if grace is None:
            grace = self.settings.shutdown_grace_s
        if self._grpc is not None:
            grpc_server, self._grpc = self._grpc, None
            await grpc_server.stop(grace)
        if self._scheduler is not None:
            scheduler, self._scheduler = self._scheduler, None
            scheduler.shutdown(wait=False)
        if self._custody_ticker is not None:
            self._custody_ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._custody_ticker
            self._custody_ticker = None
        if self._bus is not None:
            await self._bus.stop()
        if self._custody_runner is not None:
            runner, self._custody_runner = self._custody_runner, None
            try:  # what the desk did on fleet reports since the last step or tick
                await runner.save()
            finally:
                if runner.keeper is not None:
                    await asyncio.to_thread(runner.keeper.close)
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None
        if self._metrics_endpoint is not None:
            endpoint, self._metrics_endpoint = self._metrics_endpoint, None
            await endpoint.close()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)
        if self._store is not None:
            store, self._store = self._store, None
            store.close()
        if self._ledger is not None:
            ledger, self._ledger = self._ledger, None
            ledger.close()

    async def run_forever(self, on_started: Callable[[Service], None] | None = None) -> None:
        """Start, call `on_started(self)`, serve until SIGINT or SIGTERM, then stop."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):  # e.g. Windows: KeyboardInterrupt
                pass
        try:
            await self.start()
            if on_started is not None:
                on_started(self)
            await stop.wait()
            log.info("stopping")
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            await self.stop()
