"""Warm start: the full solve starts from the current plan (`Snapshot.hint`)."""

from __future__ import annotations

import dataclasses
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.planning import Snapshot, StopKind, build_problem, solve
from fleet.planning.problem import Hint
from fleet.planning.solver import _hint_routes, _layout
from tests.unit.test_planning import NOW, check_plan, onboard, robot, snapshots, task, travel

P, D = StopKind.PICKUP, StopKind.DROPOFF


def _orders_of(snapshot: Snapshot, hint: Hint = ()) -> dict[str, list[str]]:
    snap = dataclasses.replace(snapshot, hint=hint)
    plan = solve(build_problem(snap, travel), time_limit_s=5.0)
    check_plan(snap, plan)
    return {
        rid: [oid for stop in route.stops for oid in stop.order_ids if stop.kind is P]
        for rid, route in plan.routes.items()
    }


def test_an_equally_good_current_plan_is_kept() -> None:
    # Two identical robots side by side, one task: either is as good. From scratch the solver
    # picks one; told that the other already has it, it keeps it there (no churn).
    snap = Snapshot(NOW, (robot("R1", "A"), robot("R2", "A")), (task("T1", "B", "C"),))
    cold = _orders_of(snap)
    chosen = next(rid for rid, ids in cold.items() if ids)
    other = "R2" if chosen == "R1" else "R1"
    warm = _orders_of(snap, ((other, (("T1", P), ("T1", D))),))
    assert warm[other] == ["T1"] and warm[chosen] == []


def test_a_bad_current_plan_is_improved() -> None:
    # The hint gives the far robot the task; the search moves it to the near one.
    snap = Snapshot(NOW, (robot("NEAR", "B"), robot("FAR", "X")), (task("T1", "B", "C"),))
    warm = _orders_of(snap, (("FAR", (("T1", P), ("T1", D))),))
    assert warm["NEAR"] == ["T1"]


def test_visits_that_cannot_stand_are_left_out_of_the_start() -> None:
    snap = Snapshot(
        NOW,
        (robot("R1", "A", onboard=(onboard("ON1", "D"),)), robot("R2", "A")),
        (task("T1"), task("T2"), task("T3")),
        hint=(
            (
                "R1",
                (
                    ("GONE", P),  # not in the problem
                    ("T1", D),  # delivery before its pickup
                    ("T1", P),
                    ("T2", P),
                    ("T2", D),
                    ("ON1", D),  # its own onboard order
                    ("T3", P),  # pickup without its delivery
                ),
            ),
            ("R2", (("ON1", D), ("T2", P), ("T2", D))),  # someone else's / already used
        ),
    )
    problem = build_problem(snap, travel)
    served = [k for k, allowed in enumerate(problem.allowed_vehicles) if allowed]
    nodes, pairs = _layout(problem, served)
    routes = _hint_routes(problem, nodes, pairs)
    keys = [[nodes[n].key for n in route] for route in routes]
    assert keys == [[("T2", P), ("T2", D), ("ON1", D)], []]
    plan = solve(problem, time_limit_s=5.0)
    check_plan(snap, plan)
    assert {"T1", "T2", "T3"} <= set(plan.assignment)


def test_a_hint_replays_identically() -> None:
    snap = Snapshot(
        NOW,
        (robot("R1", "A"), robot("R2", "E")),
        tuple(task(f"T{i}", p, d) for i, (p, d) in enumerate([("B", "C"), ("D", "E"), ("C", "A")])),
        hint=(("R1", (("T0", P), ("T2", P), ("T0", D), ("T2", D))), ("R2", (("T1", P), ("T1", D)))),
    )
    first = solve(build_problem(snap, travel), time_limit_s=5.0)
    second = solve(build_problem(snap, travel), time_limit_s=5.0)
    assert first == second


@settings(max_examples=25, deadline=None)
@given(snapshots(), st.randoms(use_true_random=False))
def test_a_plan_warm_started_from_any_hint_obeys_the_rules(
    snapshot: Snapshot, rnd: random.Random
) -> None:
    # Any hint, sensible or not (visits shuffled across robots and out of order), gives a plan
    # that keeps every rule and serves what it can.
    visits = [(t.order_id, kind) for t in snapshot.tasks for kind in (P, D)]
    visits += [(o.order_id, D) for v in snapshot.vehicles for o in v.onboard]
    rnd.shuffle(visits)
    robots = [v.robot_id for v in snapshot.vehicles]
    hint: dict[str, list[tuple[str, StopKind]]] = {rid: [] for rid in robots}
    for visit in visits:
        if robots:
            hint[rnd.choice(robots)].append(visit)
    warm = dataclasses.replace(snapshot, hint=tuple((r, tuple(v)) for r, v in hint.items()))
    plan = solve(build_problem(warm, travel), time_limit_s=5.0)
    check_plan(warm, plan)
    cold = solve(build_problem(snapshot, travel), time_limit_s=5.0)
    assert len(plan.unassigned) <= len(cold.unassigned)
