"""Optimizer: a problem from a snapshot of the fleet, an OR-Tools solve, a plan of routes.

`build_problem(snapshot, travel) -> solve(problem, time_limit_s, seed) -> Plan`, a pure function
pipeline (DESIGN.md principle 4): no I/O, no clock, and a `Problem` pickles to a worker process.
"""

from fleet.planning.plan import Plan, RoutePlan, Stop, StopKind
from fleet.planning.problem import (
    FIRST_SOLUTION_STRATEGIES,
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
)
from fleet.planning.solver import DROP_PENALTY, GLOBAL_SPAN_COST, LATENESS_COST_PER_S, solve

__all__ = [
    "DROP_PENALTY",
    "FIRST_SOLUTION_STRATEGIES",
    "GLOBAL_SPAN_COST",
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
    "build_problem",
    "solve",
]
