"""Commands and events the dispatcher core handles, and the messages it emits.

The edges (gRPC servicers, the in-process simulator transport) translate protobuf to these and
back; the core never sees protobuf.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from fleet.domain.cargo import CargoClass
from fleet.domain.order import Order
from fleet.domain.priority import Priority
from fleet.domain.robot import RobotCapabilities, RobotMode
from fleet.traffic.steps import Step

# ---- inbound: commands from people and systems -------------------------------------------


@dataclass(frozen=True)
class CreateOrder:
    """A person asks for a delivery.

    `weight_kg`: the load's weight (0: not given). `return_of`: for a controlled drug's return
    leg, the id of the delivered outbound order it returns from ("" otherwise).
    `custody_case`: the controlled-drug custody case the order carries ("" for none): its
    pickup and drop-off are secure steps (see `fleet.traffic.steps.Step.secure`), and the
    custody desk seals and opens the compartment (`SealCompartment`, `OpenCompartment`).
    """

    pickup_station: str
    dropoff_station: str
    cargo_class: CargoClass | None
    quantity: int
    priority: Priority = Priority.ROUTINE
    needed_by: float | None = None
    requested_by: str = ""
    note: str = ""
    weight_kg: float = 0.0
    return_of: str = ""
    custody_case: str = ""


@dataclass(frozen=True)
class CancelOrder:
    """A person withdraws an order that is not yet on board."""

    order_id: str
    reason: str = ""


@dataclass(frozen=True)
class SealCompartment:
    """The custody desk recorded the loading of a custody order's compartment: the robot
    waiting at the secure pickup locks it under `seal_id` and leaves."""

    order_id: str
    seal_id: str


@dataclass(frozen=True)
class OpenCompartment:
    """The custody desk authenticated `staff_id` for a custody order: the robot waiting at
    its secure drop-off opens the compartment for them for `open_for_s` seconds."""

    order_id: str
    grant_id: str
    staff_id: str
    open_for_s: float


@dataclass(frozen=True)
class RedirectOrder:
    """Send a custody order on board to another station (nobody came to receive it: back to
    the pharmacy). The robot leaves the drop-off it waits at, its compartment still sealed."""

    order_id: str
    dropoff_station: str
    reason: str


# ---- inbound: events from robots and infrastructure ---------------------------------------


@dataclass(frozen=True)
class RobotHello:
    """A robot connected (or reconnected) and introduced itself."""

    robot_id: str
    capabilities: RobotCapabilities
    node: str
    carrying: tuple[str, ...] = ()
    battery_percent: float = 100.0
    in_lift: str = ""


@dataclass(frozen=True)
class CompartmentStatus:
    """One lockable compartment as the robot reports it (numbered from 1, as in the robot
    protocol). `seal_id`: the seal it was locked under ("" when unsealed); `seal_intact`: False
    once it was opened, forced or tampered with after sealing; `open`: the door is open now."""

    number: int
    locked: bool
    seal_id: str = ""
    seal_intact: bool = True
    open: bool = False


@dataclass(frozen=True)
class RobotStateReport:
    """A robot's periodic state. `compartments`: empty when the robot has none or does not
    report them."""

    robot_id: str
    level: str
    x: float
    y: float
    node: str
    battery_percent: float
    mode: RobotMode
    errors: tuple[str, ...] = ()
    compartments: tuple[CompartmentStatus, ...] = ()


class StepOutcome(StrEnum):
    """What a robot says about a step."""

    STARTED = "STARTED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


@dataclass(frozen=True)
class StepReport:
    """A robot's progress on a step it was sent."""

    robot_id: str
    step_id: int
    outcome: StepOutcome
    detail: str = ""
    node: str = ""


@dataclass(frozen=True)
class RobotDisconnected:
    """The robot's stream closed."""

    robot_id: str


class DoorMode(StrEnum):
    """A door's physical state as its controller reports it."""

    CLOSED = "CLOSED"
    OPENING = "OPENING"
    OPEN = "OPEN"
    CLOSING = "CLOSING"
    BLOCKED = "BLOCKED"
    FAULT = "FAULT"
    OFFLINE = "OFFLINE"


@dataclass(frozen=True)
class DoorReport:
    """A door controller reports a door's state."""

    door_id: str
    mode: DoorMode
    session_id: str = ""
    fault: str = ""  # BLOCKED / FAULT / OFFLINE: what the controller says is wrong


class LiftDoorState(StrEnum):
    """The car door of a lift."""

    CLOSED = "CLOSED"
    OPEN = "OPEN"
    MOVING = "MOVING"


class LiftMode(StrEnum):
    """How a lift car is being run."""

    NORMAL = "NORMAL"
    ROBOT_EXCLUSIVE = "ROBOT_EXCLUSIVE"
    OUT_OF_SERVICE = "OUT_OF_SERVICE"
    FIRE_RECALL = "FIRE_RECALL"
    OFFLINE = "OFFLINE"


@dataclass(frozen=True)
class LiftReport:
    """A lift controller reports a car's state."""

    lift_id: str
    level: str
    door: LiftDoorState
    mode: LiftMode
    session_id: str = ""
    destination: str = ""
    fault: str = ""  # OUT_OF_SERVICE / FIRE_RECALL / OFFLINE: why, as the controller says
    # Seconds left on the session's lease when the report was made (0: no session or no lease).
    lease_remaining_s: float = 0.0


@dataclass(frozen=True)
class FireAlarm:
    """The building's fire alarm changed (a controller relays it). While active, every fire
    door is released to close and no robot may hold one open or enter a lift."""

    active: bool
    controller_id: str = ""
    detail: str = ""


@dataclass(frozen=True)
class RequestAck:
    """A controller's answer to a door or lift request: accepted, or refused and why (e.g. an
    access-controlled door refusing a robot, a car out of service, an expired lease)."""

    device_id: str
    session_id: str
    accepted: bool
    reason: str = ""


class OperatorAction(StrEnum):
    """What an operator in the operations centre can do to the traffic."""

    PAUSE_ROBOT = "PAUSE_ROBOT"  # target: robot id, or "" for every robot
    RESUME_ROBOT = "RESUME_ROBOT"  # target: robot id, or "" for every robot
    CLOSE_LANE = "CLOSE_LANE"  # target: lane name (`A--B` two-way, `A->B` one-way)
    REOPEN_LANE = "REOPEN_LANE"
    CLOSE_DOOR = "CLOSE_DOOR"  # target: door name
    REOPEN_DOOR = "REOPEN_DOOR"
    CLOSE_LIFT = "CLOSE_LIFT"  # target: lift name
    REOPEN_LIFT = "REOPEN_LIFT"


@dataclass(frozen=True)
class OperatorCommand:
    """An operator acts on the traffic; every plan it affects is rebuilt."""

    action: OperatorAction
    target: str = ""
    reason: str = ""
    operator: str = ""


@dataclass(frozen=True)
class RaiseAlert:
    """An alert from outside the core (the vault's expiry sweep): kept, listed and watched
    like the core's own (`Alert`), once per code and subject until the message changes."""

    code: str
    severity: AlertSeverity
    subject: str
    message: str


@dataclass(frozen=True)
class ControllerHello:
    """A door/lift controller connected and named its devices."""

    controller_id: str
    door_ids: tuple[str, ...] = ()
    lift_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Tick:
    """Time passed: check timeouts and re-plan if anything asked for it."""


Inbound = (
    CreateOrder
    | CancelOrder
    | SealCompartment
    | OpenCompartment
    | RedirectOrder
    | RobotHello
    | RobotStateReport
    | StepReport
    | RobotDisconnected
    | DoorReport
    | LiftReport
    | ControllerHello
    | FireAlarm
    | RequestAck
    | OperatorCommand
    | RaiseAlert
    | Tick
)

# ---- outbound --------------------------------------------------------------------------------


@dataclass(frozen=True)
class WelcomeRobot:
    """Tell a robot it is accepted."""

    robot_id: str
    map_name: str
    state_interval_s: float


@dataclass(frozen=True)
class SendStep:
    """Tell a robot to execute a step."""

    robot_id: str
    step_id: int
    step: Step
    session_id: str = ""


class InstantKind(StrEnum):
    """Instant actions for robots."""

    PAUSE = "PAUSE"
    RESUME = "RESUME"
    CANCEL_STEP = "CANCEL_STEP"
    # Custody (controlled drugs): lock the loaded compartment under a seal id; unlock it for one
    # authenticated person for a limited time (it relocks by itself when closed or when the
    # time runs out).
    SEAL_COMPARTMENT = "SEAL_COMPARTMENT"
    OPEN_COMPARTMENT = "OPEN_COMPARTMENT"


@dataclass(frozen=True)
class SendInstantAction:
    """Tell a robot to act now, outside its steps.

    For SEAL_COMPARTMENT / OPEN_COMPARTMENT: `compartment` (numbered from 1, as in the robot
    protocol), `seal_id` (SEAL), `grant_id`, `staff_id` and `open_for_s` (OPEN: whom the
    custody book authenticated, and for how long the compartment may open)."""

    robot_id: str
    action_id: int
    kind: InstantKind
    reason: str = ""
    compartment: int = 0
    seal_id: str = ""
    grant_id: str = ""
    staff_id: str = ""
    open_for_s: float = 0.0


class DoorAction(StrEnum):
    """Door requests."""

    OPEN = "OPEN"
    CLOSE = "CLOSE"


@dataclass(frozen=True)
class DoorCommand:
    """Ask a door controller to open or close a door for a session."""

    door_id: str
    action: DoorAction
    session_id: str
    robot_id: str


class LiftAction(StrEnum):
    """Lift requests."""

    CALL = "CALL"
    GO_TO = "GO_TO"
    RELEASE = "RELEASE"
    RENEW = "RENEW"  # extend the session's lease; changes nothing else


@dataclass(frozen=True)
class LiftCommand:
    """Ask a lift controller to call, send or release a car."""

    lift_id: str
    action: LiftAction
    session_id: str
    robot_id: str
    level: str = ""
    # The controller frees the car when the session is not renewed (any request of the session
    # renews it) within this many seconds; 0: no lease.
    lease_s: float = 0.0


class AlertSeverity(StrEnum):
    """How urgently logistics staff must act."""

    INFO = "INFO"
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"


@dataclass(frozen=True)
class Alert:
    """Something logistics staff must know or act on (a lift out of service, a door stuck on the
    only route, robots paused). `cleared` alerts say the matter is over; `subject` names the
    device or robot, `robots` the robots it affects."""

    at: float
    code: str
    severity: AlertSeverity
    subject: str
    message: str
    robots: tuple[str, ...] = ()
    cleared: bool = False


@dataclass(frozen=True)
class SecureStop:
    """A robot stands at a station with a custody order, waiting for people: to load and seal
    its compartment (PICKUP) or to open it for the recipient (DROPOFF). `compartment` is
    numbered from 1, as in the robot protocol (0: the robot has no compartment rule)."""

    at: float
    robot_id: str
    order_id: str
    custody_case: str
    kind: str  # "PICKUP" or "DROPOFF"
    station: str
    node: str
    compartment: int


@dataclass(frozen=True)
class OrderChanged:
    """An order changed; watchers are told."""

    order: Order


@dataclass(frozen=True)
class StepRecord:
    """One line of the dispatcher's step log: what was done, for whom, when."""

    at: float
    robot_id: str
    what: str
    kind: str
    order_ids: tuple[str, ...] = field(default=())


Outbound = (
    WelcomeRobot
    | SendStep
    | SendInstantAction
    | DoorCommand
    | LiftCommand
    | OrderChanged
    | Alert
    | SecureStop
)
