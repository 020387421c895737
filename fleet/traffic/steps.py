"""From a route through the building to the steps a robot and the dispatcher carry out.

A lane with a door becomes: open the door (dispatcher), drive through (robot), close it
(dispatcher). A lift ride becomes: call the car to this level (dispatcher), enter (robot), ride
to the other level (dispatcher), exit (robot), release the car (dispatcher).

The car is called before the robot drives the last lane into the lift lobby: the robot waits
for its car one node short of the lobby (a holding point in a well-drawn map), so the lobby,
which admits one robot at a time, stays free for a robot coming out of the car. A robot waiting
in the lobby for the car another robot is riding to that lobby would deadlock with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from fleet.building.graph import LaneLeg, LiftLeg, Route


class StepKind(StrEnum):
    """What a step does: robot-side kinds go to the robot, the dispatcher does the rest."""

    MOVE = "MOVE"
    DOOR_OPEN = "DOOR_OPEN"
    DOOR_CLOSE = "DOOR_CLOSE"
    LIFT_CALL = "LIFT_CALL"
    LIFT_ENTER = "LIFT_ENTER"
    LIFT_RIDE = "LIFT_RIDE"
    LIFT_EXIT = "LIFT_EXIT"
    LIFT_RELEASE = "LIFT_RELEASE"
    PICKUP = "PICKUP"
    DROPOFF = "DROPOFF"
    CHARGE = "CHARGE"
    # Dispatcher-side marker: rebuild the route from here to the stop's final step (after a
    # back-off, a fire-recall exit or a closure met mid-step).
    REROUTE = "REROUTE"

    @property
    def robot_side(self) -> bool:
        """True for steps the robot executes and reports on."""
        return self in _ROBOT_SIDE


_ROBOT_SIDE = frozenset(
    {
        StepKind.MOVE,
        StepKind.LIFT_ENTER,
        StepKind.LIFT_EXIT,
        StepKind.PICKUP,
        StepKind.DROPOFF,
        StepKind.CHARGE,
    }
)


@dataclass(frozen=True)
class Step:
    """One step. Only the fields its kind needs are set."""

    kind: StepKind
    from_node: str = ""
    to_node: str = ""
    distance_m: float = 0.0
    speed_limit_m_s: float | None = None
    door: str = ""
    lift: str = ""
    level: str = ""
    to_level: str = ""
    station: str = ""
    order_ids: tuple[str, ...] = ()
    quantity: int = 0
    target_percent: float = 0.0  # CHARGE: battery to reach
    max_duration_s: float = 0.0  # CHARGE: longest stay on the charger (0: no limit)
    # PICKUP/DROPOFF: (order id, compartment index from 0) of each order whose compartment is
    # known; empty for a robot without compartments.
    compartments: tuple[tuple[str, int], ...] = ()
    # PICKUP/DROPOFF of a controlled drug (custody): at a secure PICKUP the robot waits until the
    # dispatcher seals the loaded compartment (SEAL_COMPARTMENT) and completes once it is locked
    # under that seal; at a secure DROPOFF the compartment stays locked until the dispatcher
    # opens it for an authenticated recipient (OPEN_COMPARTMENT), and the step completes once
    # it was opened and closed again. Either may be cancelled (CANCEL_STEP): nobody came.
    secure: bool = False
    note: str = ""  # REROUTE: why the route is rebuilt

    def describe(self) -> str:
        """A short human-readable line for logs and the step record."""
        k = self.kind
        if k is StepKind.MOVE:
            via = f" through door {self.door}" if self.door else ""
            return f"move {self.from_node} -> {self.to_node}{via}"
        if k in (StepKind.DOOR_OPEN, StepKind.DOOR_CLOSE):
            return f"{k.value.lower().replace('_', ' ')} {self.door}"
        if k is StepKind.LIFT_RIDE:
            return f"ride {self.lift} {self.level} -> {self.to_level}"
        if k in (StepKind.LIFT_CALL, StepKind.LIFT_ENTER, StepKind.LIFT_EXIT):
            return f"{k.value.lower().replace('_', ' ')} {self.lift} at {self.level}"
        if k is StepKind.LIFT_RELEASE:
            return f"release {self.lift}"
        if k is StepKind.CHARGE:
            return f"charge at {self.station} to {self.target_percent:.0f} %"
        if k is StepKind.REROUTE:
            return "re-route"
        return f"{k.value.lower()} {self.station} {','.join(self.order_ids)}"


def steps_for_route(route: Route, speed_limits: dict[tuple[str, str], float | None]) -> list[Step]:
    """The steps that drive `route`. `speed_limits` maps (start, end) of a lane to its limit."""
    steps: list[Step] = []
    for leg in route.legs:
        if isinstance(leg, LaneLeg):
            move = Step(
                StepKind.MOVE,
                from_node=leg.start,
                to_node=leg.end,
                distance_m=leg.length_m,
                speed_limit_m_s=speed_limits.get((leg.start, leg.end)),
                door=leg.door or "",
            )
            if leg.door:
                steps.append(Step(StepKind.DOOR_OPEN, door=leg.door, from_node=leg.start))
                steps.append(move)
                steps.append(Step(StepKind.DOOR_CLOSE, door=leg.door, to_node=leg.end))
            else:
                steps.append(move)
        elif isinstance(leg, LiftLeg):
            call = Step(
                StepKind.LIFT_CALL, lift=leg.lift, level=leg.from_level, from_node=leg.start
            )
            steps.insert(_before_lane_into(steps, leg.start), call)
            steps.extend(
                [
                    Step(
                        StepKind.LIFT_ENTER,
                        lift=leg.lift,
                        level=leg.from_level,
                        from_node=leg.start,
                    ),
                    Step(
                        StepKind.LIFT_RIDE,
                        lift=leg.lift,
                        level=leg.from_level,
                        to_level=leg.to_level,
                    ),
                    Step(StepKind.LIFT_EXIT, lift=leg.lift, level=leg.to_level, to_node=leg.end),
                    Step(StepKind.LIFT_RELEASE, lift=leg.lift, level=leg.to_level),
                ]
            )
    return steps


def _before_lane_into(steps: list[Step], lobby: str) -> int:
    """Where to call a car: before the steps of the lane that ends in its lobby (the door
    steps of that lane included), or here when the robot already stands in the lobby."""
    i = len(steps)
    if i and steps[-1].kind is StepKind.DOOR_CLOSE:
        i -= 1
    if i and steps[i - 1].kind is StepKind.MOVE and steps[i - 1].to_node == lobby:
        i -= 1
        if i and steps[i - 1].kind is StepKind.DOOR_OPEN:
            i -= 1
        return i
    return len(steps)
