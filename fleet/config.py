"""The one typed settings object of the service, built at start-up (DESIGN.md principle 9).

Nothing is read at import time: `Settings.from_env_and_args(args, os.environ)` is called by the
command line (`fleet serve`) and the result is passed down from `fleet.bootstrap`. Command-line
flags override `FLEET_*` environment variables, which override the defaults. Every invalid value
raises ValueError naming the flag, variable or field it came from.
"""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

DEFAULT_DATABASE_URL = "sqlite:///fleet.db"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_GRPC_PORT = 50051
DEFAULT_METRICS_PORT = 9464
METRICS_OFF = -1
LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")
# The demo custody files, as `fleet.custody.setup.CustodySources` defaults them (not imported:
# that module pulls in the building loader, too slow for every `fleet` command).
_DEMO_DATA = Path(__file__).resolve().parent.parent / "simulators" / "data"


@dataclass(frozen=True)
class Settings:
    """Everything the service is configured with.

    `grpc_port` 0 and `metrics_port` 0 ask the OS for a free port (tests); `metrics_port` -1
    turns the metrics endpoint off. `time_scale` != 1 runs the service on a `ScaledClock`.
    `custody` serves CustodyService with the fleet (the custody desk: robots are called, sealed
    and opened for the cases), its ledger in the same database, its catalogue, staff and
    opening vault stock from the `custody_*` files (default: the demo files of
    simulators/data, invented people and lots); `custody_fast_pins` hashes the staff PINs
    cheaply (demos and tests with the demo staff only, never for real people). With
    `custody_signing_key` the service signs a checkpoint of the ledger's head every
    `custody_checkpoint_min` minutes (and once at start).
    """

    map_path: Path
    database_url: str = DEFAULT_DATABASE_URL
    host: str = DEFAULT_HOST
    grpc_port: int = DEFAULT_GRPC_PORT
    metrics_port: int = DEFAULT_METRICS_PORT
    time_scale: float = 1.0
    solve_time_limit_s: float = 2.0
    offline_timeout_s: float = 30.0
    # Late commitment (minutes, 0: off): see fleet.planning.deferral.
    defer_margin_min: float = 0.0
    tick_interval_s: float = 1.0
    shutdown_grace_s: float = 5.0
    log_level: str = "INFO"
    custody: bool = False
    custody_catalogue: Path = _DEMO_DATA / "controlled_drugs.yaml"
    custody_staff: Path = _DEMO_DATA / "staff.yaml"
    custody_stock: Path = _DEMO_DATA / "vault_stock.yaml"
    custody_fast_pins: bool = False
    custody_signing_key: Path | None = None
    custody_checkpoint_min: float = 60.0

    def __post_init__(self) -> None:
        for f in fields(self):
            _SPECS[f.name].check(getattr(self, f.name), f.name)

    @property
    def log_level_number(self) -> int:
        """`log_level` as a `logging` level number."""
        return int(logging.getLevelName(self.log_level))

    @classmethod
    def from_env_and_args(cls, args: argparse.Namespace | None, env: Mapping[str, str]) -> Settings:
        """Settings from `FLEET_*` variables in `env`, overridden by flags set in `args`.

        A flag counts as set when the namespace has the attribute and it is not None (declare
        the flags with `default=None`). Raises ValueError naming the flag or variable of the
        first bad value, or `--map / FLEET_MAP` when no map is given.
        """
        values: dict[str, Any] = {}
        for name, spec in _SPECS.items():
            raw_flag = getattr(args, spec.attr, None) if args is not None else None
            if raw_flag is not None:
                values[name] = spec.parse(raw_flag, spec.flag)
            elif spec.env in env and env[spec.env].strip() != "":
                values[name] = spec.parse(env[spec.env], spec.env)
        if "map_path" not in values:
            raise ValueError(
                f"{_SPECS['map_path'].flag} / {_SPECS['map_path'].env}: a building map is required"
            )
        return cls(**values)


# ---- parsing and checks ------------------------------------------------------------------------


def _parse_int(raw: object, label: str) -> int:
    if isinstance(raw, bool):
        raise ValueError(f"{label}: must be an integer, got {raw!r}")
    if isinstance(raw, int):
        return raw
    try:
        return int(str(raw).strip())
    except ValueError:
        raise ValueError(f"{label}: must be an integer, got {raw!r}") from None


def _parse_float(raw: object, label: str) -> float:
    if isinstance(raw, bool):
        raise ValueError(f"{label}: must be a number, got {raw!r}")
    if isinstance(raw, int | float):
        return float(raw)
    try:
        return float(str(raw).strip())
    except ValueError:
        raise ValueError(f"{label}: must be a number, got {raw!r}") from None


def _parse_str(raw: object, label: str) -> str:
    return str(raw).strip()


def _parse_path(raw: object, label: str) -> Path:
    text = str(raw).strip()
    if not text:
        raise ValueError(f"{label}: must not be empty")
    return Path(text)


def _parse_bool(raw: object, label: str) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{label}: must be true or false (1/0, yes/no, on/off), got {raw!r}")


def _check_bool(value: object, label: str) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{label}: must be true or false, got {value!r}")


def _parse_level(raw: object, label: str) -> str:
    return str(raw).strip().upper()


def _check_port(value: object, label: str, allow_off: bool) -> None:
    low = METRICS_OFF if allow_off else 0
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= 65535:
        what = "0..65535 (0 = any free port" + (", -1 = off)" if allow_off else ")")
        raise ValueError(f"{label}: must be {what}, got {value!r}")


def _check_positive(value: object, label: str) -> None:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{label}: must be a finite number greater than 0, got {value!r}")


def _check_non_negative(value: object, label: str) -> None:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"{label}: must be a finite number of at least 0, got {value!r}")


def _check_text(value: object, label: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{label}: must not be empty")


def _check_path(value: object, label: str) -> None:
    if not isinstance(value, Path) or not str(value):
        raise ValueError(f"{label}: must be a path, got {value!r}")


def _check_optional_path(value: object, label: str) -> None:
    if value is not None:
        _check_path(value, label)


def _check_level(value: object, label: str) -> None:
    if value not in LOG_LEVELS:
        raise ValueError(f"{label}: must be one of {', '.join(LOG_LEVELS)}, got {value!r}")


@dataclass(frozen=True)
class _Spec:
    """Where one setting comes from and how it is parsed and checked."""

    attr: str  # argparse destination
    flag: str
    env: str
    parse_raw: Callable[[object, str], object]
    check_value: Callable[[object, str], None]

    def parse(self, raw: object, label: str) -> object:
        value = self.parse_raw(raw, label)
        self.check(value, label)
        return value

    def check(self, value: object, label: str) -> None:
        self.check_value(value, label)


def _port(allow_off: bool) -> Callable[[object, str], None]:
    def check(value: object, label: str) -> None:
        _check_port(value, label, allow_off)

    return check


_SPECS: dict[str, _Spec] = {
    "map_path": _Spec("map", "--map", "FLEET_MAP", _parse_path, _check_path),
    "database_url": _Spec("db", "--db", "FLEET_DATABASE_URL", _parse_str, _check_text),
    "host": _Spec("host", "--host", "FLEET_HOST", _parse_str, _check_text),
    "grpc_port": _Spec("port", "--port", "FLEET_GRPC_PORT", _parse_int, _port(False)),
    "metrics_port": _Spec(
        "metrics_port", "--metrics-port", "FLEET_METRICS_PORT", _parse_int, _port(True)
    ),
    "time_scale": _Spec(
        "time_scale", "--time-scale", "FLEET_TIME_SCALE", _parse_float, _check_positive
    ),
    "solve_time_limit_s": _Spec(
        "solve_time_limit",
        "--solve-time-limit",
        "FLEET_SOLVE_TIME_LIMIT_S",
        _parse_float,
        _check_positive,
    ),
    "offline_timeout_s": _Spec(
        "offline_timeout",
        "--offline-timeout",
        "FLEET_OFFLINE_TIMEOUT_S",
        _parse_float,
        _check_positive,
    ),
    "defer_margin_min": _Spec(
        "defer_margin",
        "--defer-margin-min",
        "FLEET_DEFER_MARGIN_MIN",
        _parse_float,
        _check_non_negative,
    ),
    "tick_interval_s": _Spec(
        "tick_interval", "--tick-interval", "FLEET_TICK_INTERVAL_S", _parse_float, _check_positive
    ),
    "shutdown_grace_s": _Spec(
        "shutdown_grace",
        "--shutdown-grace",
        "FLEET_SHUTDOWN_GRACE_S",
        _parse_float,
        _check_non_negative,
    ),
    "log_level": _Spec("log_level", "--log-level", "FLEET_LOG_LEVEL", _parse_level, _check_level),
    "custody": _Spec("custody", "--custody", "FLEET_CUSTODY", _parse_bool, _check_bool),
    "custody_catalogue": _Spec(
        "custody_catalogue",
        "--custody-catalogue",
        "FLEET_CUSTODY_CATALOGUE",
        _parse_path,
        _check_path,
    ),
    "custody_staff": _Spec(
        "custody_staff", "--custody-staff", "FLEET_CUSTODY_STAFF", _parse_path, _check_path
    ),
    "custody_stock": _Spec(
        "custody_stock", "--custody-stock", "FLEET_CUSTODY_STOCK", _parse_path, _check_path
    ),
    "custody_fast_pins": _Spec(
        "custody_fast_pins",
        "--custody-fast-pins",
        "FLEET_CUSTODY_FAST_PINS",
        _parse_bool,
        _check_bool,
    ),
    "custody_signing_key": _Spec(
        "custody_signing_key",
        "--custody-signing-key",
        "FLEET_CUSTODY_SIGNING_KEY",
        _parse_path,
        _check_optional_path,
    ),
    "custody_checkpoint_min": _Spec(
        "custody_checkpoint_min",
        "--custody-checkpoint-min",
        "FLEET_CUSTODY_CHECKPOINT_MIN",
        _parse_float,
        _check_positive,
    ),
}


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the flags `Settings.from_env_and_args` reads (all default to None = not set)."""
    s = _SPECS
    parser.add_argument(
        s["map_path"].flag, dest="map", metavar="FILE", help="building map (YAML); env FLEET_MAP"
    )
    parser.add_argument(
        s["database_url"].flag,
        dest="db",
        metavar="URL",
        help=f"database URL (default {DEFAULT_DATABASE_URL}); env FLEET_DATABASE_URL",
    )
    parser.add_argument(
        s["host"].flag,
        dest="host",
        metavar="ADDR",
        help=f"address to listen on (default {DEFAULT_HOST}); env FLEET_HOST",
    )
    parser.add_argument(
        s["grpc_port"].flag,
        dest="port",
        metavar="PORT",
        help=f"gRPC port (default {DEFAULT_GRPC_PORT}, 0 = any free port); env FLEET_GRPC_PORT",
    )
    parser.add_argument(
        s["metrics_port"].flag,
        dest="metrics_port",
        metavar="PORT",
        help=f"Prometheus /metrics port (default {DEFAULT_METRICS_PORT}, "
        "0 = any free port, -1 = off); env FLEET_METRICS_PORT",
    )
    parser.add_argument(
        s["time_scale"].flag,
        dest="time_scale",
        metavar="F",
        help="clock speed factor (default 1.0); env FLEET_TIME_SCALE",
    )
    parser.add_argument(
        s["solve_time_limit_s"].flag,
        dest="solve_time_limit",
        metavar="S",
        help="optimizer time limit in seconds (default 2.0); env FLEET_SOLVE_TIME_LIMIT_S",
    )
    parser.add_argument(
        s["offline_timeout_s"].flag,
        dest="offline_timeout",
        metavar="S",
        help="seconds without a robot report before it is offline "
        "(default 30); env FLEET_OFFLINE_TIMEOUT_S",
    )
    parser.add_argument(
        s["defer_margin_min"].flag,
        dest="defer_margin",
        metavar="MIN",
        help="late commitment: a ROUTINE order is picked up no earlier than MIN minutes (plus "
        "its trip) before it is needed, so later orders can share the trip (default 0: off); "
        "env FLEET_DEFER_MARGIN_MIN",
    )
    parser.add_argument(
        s["tick_interval_s"].flag,
        dest="tick_interval",
        metavar="S",
        help="seconds between timeout checks (default 1.0); env FLEET_TICK_INTERVAL_S",
    )
    parser.add_argument(
        s["shutdown_grace_s"].flag,
        dest="shutdown_grace",
        metavar="S",
        help="seconds open calls get to finish on shutdown (default 5); env FLEET_SHUTDOWN_GRACE_S",
    )
    parser.add_argument(
        s["log_level"].flag,
        dest="log_level",
        metavar="LEVEL",
        help="DEBUG, INFO, WARNING, ERROR (default INFO); env FLEET_LOG_LEVEL",
    )
    parser.add_argument(
        s["custody"].flag,
        dest="custody",
        action="store_const",
        const=True,
        help="serve CustodyService with the fleet: controlled-drug cases called, sealed and "
        "opened on the robots (default off); env FLEET_CUSTODY=1",
    )
    parser.add_argument(
        s["custody_catalogue"].flag,
        dest="custody_catalogue",
        metavar="FILE",
        help="controlled-drug catalogue (YAML; default the demo catalogue); "
        "env FLEET_CUSTODY_CATALOGUE",
    )
    parser.add_argument(
        s["custody_staff"].flag,
        dest="custody_staff",
        metavar="FILE",
        help="staff with roles, badges and PINs (YAML; default the demo staff); "
        "env FLEET_CUSTODY_STAFF",
    )
    parser.add_argument(
        s["custody_stock"].flag,
        dest="custody_stock",
        metavar="FILE",
        help="opening pharmacy vault stock (YAML; default the demo stock); env FLEET_CUSTODY_STOCK",
    )
    parser.add_argument(
        s["custody_fast_pins"].flag,
        dest="custody_fast_pins",
        action="store_const",
        const=True,
        help="hash the staff PINs cheaply: demos and tests with the demo staff only "
        "(default off); env FLEET_CUSTODY_FAST_PINS=1",
    )
    parser.add_argument(
        s["custody_signing_key"].flag,
        dest="custody_signing_key",
        metavar="FILE",
        help="Ed25519 signing key (PEM, `fleet custody keygen`): with it the service signs a "
        "checkpoint of the custody ledger's head every --custody-checkpoint-min minutes "
        "(default: no checkpoints); env FLEET_CUSTODY_SIGNING_KEY",
    )
    parser.add_argument(
        s["custody_checkpoint_min"].flag,
        dest="custody_checkpoint_min",
        metavar="MIN",
        help="minutes between signed ledger checkpoints (default 60); "
        "env FLEET_CUSTODY_CHECKPOINT_MIN",
    )
