"""The `fleet` command line.

    fleet serve [--map M] [--db URL] [--port P] [--metrics-port P] [--time-scale F] [--custody] ...
    fleet map check FILE
    fleet custody verify|checkpoint|keygen ...   (fleet.store.ledger)
    fleet custody report [--date D] [--tz Z] [--csv]   (fleet.custody.register)
    fleet simulate --map M [--robots N] [--hours H] ...   (simulators.fast)
    fleet demo [--map M] [--robots N] [--duration-s S] ...  (simulators.demo)

Nothing here runs at import time; `main` builds the settings from flags and `FLEET_*`
variables and hands them to `fleet.bootstrap`.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import re
import sys
import tempfile
from collections.abc import Callable, Sequence
from datetime import date
from typing import cast

from fleet.config import Settings, add_serve_arguments


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `fleet` command."""
    parser = argparse.ArgumentParser(prog="fleet", description="Hospital robot-fleet orchestrator.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser(
        "serve",
        help="run the dispatcher (gRPC and /metrics) until interrupted",
        description="Run the dispatcher. Flags override FLEET_* environment variables.",
    )
    add_serve_arguments(serve)
    serve.set_defaults(handler=_serve)

    map_cmd = commands.add_parser("map", help="building map tools")
    map_commands = map_cmd.add_subparsers(dest="map_command", metavar="ACTION", required=True)
    check = map_commands.add_parser("check", help="validate a building map file")
    check.add_argument("file", metavar="FILE", help="the map (YAML)")
    check.set_defaults(handler=_map_check)

    # ---- custody: the controlled-drug custody ledger (fleet.store.ledger) ----
    custody = commands.add_parser(
        "custody", help="custody ledger: verify, checkpoint, keygen, report"
    )
    custody_commands = custody.add_subparsers(
        dest="custody_command", metavar="ACTION", required=True
    )
    c_verify = custody_commands.add_parser(
        "verify",
        help="check the ledger's hash chain and signed checkpoints",
        description="Exit 0 and print a summary for an intact ledger; exit 1 naming the first "
        "bad record (seq and what is wrong); exit 2 when it cannot be read.",
    )
    c_checkpoint = custody_commands.add_parser(
        "checkpoint", help="sign the ledger's current head and store the checkpoint"
    )
    for sub in (c_verify, c_checkpoint):
        sub.add_argument(
            "--db", default=None, metavar="URL", help="database URL (FLEET_DATABASE_URL)"
        )
    c_verify.add_argument(
        "--public-key",
        default=None,
        metavar="FILE",
        help="PEM public key checking checkpoint signatures (FLEET_CUSTODY_PUBLIC_KEY)",
    )
    c_checkpoint.add_argument(
        "--signing-key",
        default=None,
        metavar="FILE",
        help="PEM Ed25519 signing key (FLEET_CUSTODY_SIGNING_KEY)",
    )
    c_keygen = custody_commands.add_parser("keygen", help="write a new Ed25519 key pair")
    c_keygen.add_argument("--signing-key", required=True, metavar="FILE", help="private key out")
    c_keygen.add_argument("--public-key", required=True, metavar="FILE", help="public key out")
    c_report = custody_commands.add_parser(
        "report",
        help="print a day's controlled-drug register per drug and lot",
        description="Print the day's register (专用账册): per drug and lot the units issued, "
        "administered, wasted and returned, empties recovered, open discrepancies, balance and "
        "units still out, with a TOTAL per drug and a BALANCED / NOT BALANCED verdict. "
        "Formulas: fleet/custody/register.py. Exit 0 with the report; 2 when the ledger or "
        "catalogue cannot be read.",
    )
    c_report.add_argument(
        "--db", default=None, metavar="URL", help="database URL (FLEET_DATABASE_URL)"
    )
    c_report.add_argument(
        "--date",
        type=_report_date,
        default=None,
        metavar="YYYY-MM-DD",
        help="the day to report (default: today in --tz)",
    )
    c_report.add_argument(
        "--tz",
        type=_report_zone,
        default="UTC",
        metavar="AREA/CITY",
        help="the building's IANA time zone; a day runs from local midnight to midnight (UTC)",
    )
    c_report.add_argument(
        "--catalogue",
        default=None,
        metavar="FILE",
        help=f"controlled-drug catalogue (YAML) naming the drugs ({_DEFAULT_CATALOGUE})",
    )
    c_report.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    custody.set_defaults(handler=_custody)
    rmf = map_commands.add_parser(
        "import-rmf", help="convert an Open-RMF traffic-editor building map to our format"
    )
    rmf.add_argument("file", metavar="FILE", help="the RMF map (*.building.yaml)")
    rmf.add_argument("-o", "--output", required=True, metavar="OUT", help="map to write (YAML)")
    rmf.add_argument(
        "--overlay", metavar="OVERLAY", help="stations and settings RMF lacks (maps/README.md)"
    )
    rmf.set_defaults(handler=_map_import_rmf)

    # ---- simulate: the fast digital twin (simulators.fast.main, written by the lead) ----
    simulate = commands.add_parser(
        "simulate", help="run the digital twin in virtual time and report KPIs"
    )
    simulate.add_argument("--map", required=True, metavar="FILE", help="building map (YAML)")
    simulate.add_argument("--robots", type=int, default=10, metavar="N", help="robots (10)")
    simulate.add_argument(
        "--hours", type=float, default=8.0, metavar="H", help="simulated hours (8)"
    )
    simulate.add_argument("--seed", type=int, default=1, metavar="S", help="random seed (1)")
    simulate.add_argument(
        "--db", default=None, metavar="URL", help="database URL (default: no database)"
    )
    simulate.add_argument("--json", action="store_true", help="print the report as JSON")
    simulate.add_argument(
        "--dispatcher", default="optimizer", metavar="NAME", help="dispatcher to use (optimizer)"
    )
    simulate.add_argument(
        "--workload", default="standard", metavar="NAME", help="workload generator (standard)"
    )
    simulate.add_argument(
        "--defer-margin-min",
        type=float,
        default=None,
        metavar="MIN",
        help="late commitment of the optimizer: a ROUTINE order is picked up no earlier than "
        "MIN minutes (plus its trip) before it is needed; 0 turns it off (45 for the "
        "hospital-day workload, else 0)",
    )
    simulate.set_defaults(handler=_delegate("simulators.fast"))

    # ---- demo: the live demo (simulators.demo.main, written by the lead) ----
    demo = commands.add_parser(
        "demo", help="run the dispatcher with simulated robots over gRPC, faster than real time"
    )
    demo.add_argument(
        "--map",
        default="maps/demo_hospital.yaml",
        metavar="FILE",
        help="building map (maps/demo_hospital.yaml)",
    )
    demo.add_argument("--robots", type=int, default=6, metavar="N", help="robots (6)")
    demo.add_argument(
        "--duration-s", type=float, default=60.0, metavar="S", help="wall-clock seconds to run (60)"
    )
    demo.add_argument(
        "--time-scale",
        type=float,
        default=20.0,
        metavar="F",
        help="simulated seconds per wall-clock second (20)",
    )
    demo.add_argument(
        "--db",
        default=None,
        metavar="URL",
        help="database URL (default: a SQLite file in a new temporary directory)",
    )
    demo.set_defaults(handler=_delegate("simulators.demo", temp_db=True))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `fleet` command with `argv` (default: sys.argv[1:]); returns the exit code."""
    args = build_parser().parse_args(argv)
    handler = cast(Callable[[argparse.Namespace], int], args.handler)
    return handler(args)


def _serve(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env_and_args(args, os.environ)
    except ValueError as exc:
        print(f"fleet serve: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level_number,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from fleet.bootstrap import Service  # the service's dependencies only when serving
    from fleet.building.loader import MapError
    from fleet.custody.catalogue import CatalogueError
    from fleet.custody.people import StaffFileError
    from fleet.custody.setup import StockFileError

    def started(service: Service) -> None:
        metrics = service.metrics_port
        print(
            f"fleet: gRPC on {settings.host}:{service.grpc_port}, metrics "
            + (f"on http://{settings.host}:{metrics}/metrics" if metrics is not None else "off"),
            flush=True,
        )

    try:
        asyncio.run(Service(settings).run_forever(started))
    except (MapError, CatalogueError, StaffFileError, StockFileError) as exc:
        print(f"fleet serve: {exc}", file=sys.stderr)
        return 1
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"fleet serve: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def _map_check(args: argparse.Namespace) -> int:
    from fleet.building.loader import check_map

    code, lines = check_map(args.file)
    for line in lines:
        print(line)
    return code


def _map_import_rmf(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fleet.building.loader import MapError
    from fleet.building.rmf_import import import_rmf_file

    try:
        result, text = import_rmf_file(args.file, args.overlay, out_name=args.output)
    except MapError as exc:
        print(exc, file=sys.stderr)
        return 1
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    Path(args.output).write_text(text, encoding="utf-8")
    m = result.map
    print(
        f"{args.output}: {len(m['levels'])} levels, {len(m['lanes'])} lanes, "
        f"{len(m.get('doors', []))} doors, {len(m.get('lifts', []))} lifts, "
        f"{len(m.get('stations', []))} stations"
    )
    return 0


def _custody(args: argparse.Namespace) -> int:
    from fleet.clock import SystemClock
    from fleet.config import DEFAULT_DATABASE_URL
    from fleet.store import ledger

    env = os.environ
    db = args.__dict__.get("db") or env.get("FLEET_DATABASE_URL") or DEFAULT_DATABASE_URL
    if args.custody_command == "report":
        return _custody_report(args, db)
    if args.custody_command == "verify":
        key = args.public_key or env.get("FLEET_CUSTODY_PUBLIC_KEY")
        result = ledger.verify_command(db, key)
    elif args.custody_command == "checkpoint":
        signing_key = args.signing_key or env.get("FLEET_CUSTODY_SIGNING_KEY")
        if not signing_key:
            print(
                "fleet custody checkpoint: give --signing-key or FLEET_CUSTODY_SIGNING_KEY",
                file=sys.stderr,
            )
            return 2
        result = ledger.checkpoint_command(db, signing_key, SystemClock())
    else:
        result = ledger.keygen_command(args.signing_key, args.public_key)
    out = sys.stdout if result.code == 0 else sys.stderr
    for line in result.lines:
        print(line, file=out)
    return result.code


# The demo catalogue ships with the repository; resolved from the package so the default works
# from any working directory.
_DEFAULT_CATALOGUE = "simulators/data/controlled_drugs.yaml"


def _default_catalogue() -> str:
    from pathlib import Path

    if Path(_DEFAULT_CATALOGUE).is_file():
        return _DEFAULT_CATALOGUE
    return str(Path(__file__).resolve().parent.parent / _DEFAULT_CATALOGUE)


def _report_date(text: str) -> date:
    """argparse type of `--date`: strictly YYYY-MM-DD (date.fromisoformat alone would also take
    20250301 and 2025-W09-6)."""
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        raise argparse.ArgumentTypeError(f"invalid date {text!r}: expected YYYY-MM-DD")
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"invalid date {text!r}: {exc}") from None


def _report_zone(text: str) -> str:
    """argparse type of `--tz`: an IANA zone name, checked against the tz database."""
    from fleet.custody.register import parse_zone

    try:
        parse_zone(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text.strip()


def _custody_report(args: argparse.Namespace, db: str) -> int:
    """`fleet custody report`: the day's register as a table (or CSV) on stdout."""
    from datetime import datetime

    from sqlalchemy.exc import SQLAlchemyError

    from fleet.clock import SystemClock
    from fleet.custody.catalogue import CatalogueError, load_catalogue
    from fleet.custody.register import day_register, parse_zone
    from fleet.store.ledger import LedgerError, connect_ledger

    tz: str = args.tz
    day: date = args.date or datetime.fromtimestamp(SystemClock().now(), parse_zone(tz)).date()
    try:
        catalogue = load_catalogue(args.catalogue or _default_catalogue())
    except CatalogueError as exc:
        print(f"fleet custody report: catalogue: {exc}", file=sys.stderr)
        return 2
    try:
        store = connect_ledger(db)
    except (ValueError, LedgerError) as exc:
        print(f"fleet custody report: {exc}", file=sys.stderr)
        return 2
    try:
        register = day_register(store.iter_events(), catalogue, day, tz)
    except SQLAlchemyError as exc:
        print(f"fleet custody report: cannot read the ledger: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    sys.stdout.write(register.to_csv() if args.csv else register.to_table())
    return 0


def _delegate(module: str, temp_db: bool = False) -> Callable[[argparse.Namespace], int]:
    """A handler that imports `module` only when its subcommand runs and calls its `main`."""

    def run(args: argparse.Namespace) -> int:
        try:
            target = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name is not None and module.startswith(exc.name):
                print(f"fleet {args.command}: {module} is not available", file=sys.stderr)
                return 2
            raise
        if temp_db and args.db is None:
            directory = tempfile.mkdtemp(prefix="fleet-demo-")
            args.db = f"sqlite:///{os.path.join(directory, 'fleet.db')}"
        entry = cast(Callable[[argparse.Namespace], int], target.main)
        return entry(args)

    return run


if __name__ == "__main__":
    sys.exit(main())
