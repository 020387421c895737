"""Optimizer: a problem from a snapshot of the fleet, an OR-Tools solve, a plan of routes.

`build_problem(snapshot, travel) -> solve(problem, time_limit_s, seed) -> Plan`, a pure function
pipeline (DESIGN.md principle 4): no I/O, no clock, and a `Problem` pickles to a worker process.

The hospital rules of issue 3 (weight, compartments, pinned robots and compartments, STAT
pre-empting charging, battery and charging visits) are optional fields of `Task`,
`OnboardTask`, `VehicleState` and `Snapshot`; see `fleet.planning.problem`.
"""

from fleet.planning.plan import Plan, RoutePlan, Stop, StopKind, assign_compartments
from fleet.planning.problem import (
    ENERGY_UNITS_PER_PCT,
    FIRST_SOLUTION_STRATEGIES,
    GRAMS_PER_KG,
    HORIZON_S,
    METAHEURISTICS,
    ROUTE_ELIMINATION_SEARCH,
    SINGLE_NODE_MOVES_OFF,
    UNREACHABLE,
    Distance,
    OnboardTask,
    Problem,
    SearchConfig,
    Snapshot,
    Task,
    TravelTime,
    VehicleState,
    build_problem,
    fits_vehicle,
    grams,
)
from fleet.planning.solver import (
    CHARGE_PENALTY,
    DROP_PENALTY,
    GLOBAL_SPAN_COST,
    LATENESS_COST_PER_S,
    solve,
)

__all__ = [
    "CHARGE_PENALTY",
    "DROP_PENALTY",
    "ENERGY_UNITS_PER_PCT",
    "FIRST_SOLUTION_STRATEGIES",
    "GLOBAL_SPAN_COST",
    "GRAMS_PER_KG",
    "HORIZON_S",
    "LATENESS_COST_PER_S",
    "METAHEURISTICS",
    "ROUTE_ELIMINATION_SEARCH",
    "SINGLE_NODE_MOVES_OFF",
    "UNREACHABLE",
    "Distance",
    "OnboardTask",
    "Plan",
    "Problem",
    "RoutePlan",
    "SearchConfig",
    "Snapshot",
    "Stop",
    "StopKind",
    "Task",
    "TravelTime",
    "VehicleState",
    "assign_compartments",
    "build_problem",
    "fits_vehicle",
    "grams",
    "solve",
]
