"""Protobuf <-> core messages. The only place that knows both vocabularies.

Used by the gRPC servicers and by the simulator's in-process transport, so a simulated robot
exchanges exactly the bytes a vendor's robot would.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from google.protobuf.timestamp_pb2 import Timestamp

from fleet.building.model import Building
from fleet.dispatch import messages as m
from fleet.domain.cargo import CargoClass
from fleet.domain.errors import InvalidArgument
from fleet.domain.order import Order, OrderState
from fleet.domain.priority import Priority
from fleet.domain.robot import RobotCapabilities, RobotMode
from fleet.traffic.steps import Step, StepKind
from fleet.v1 import common_pb2, infrastructure_pb2, operations_pb2, orders_pb2, robot_pb2

CARGO_TO_PB = {
    CargoClass.STERILE: common_pb2.CARGO_CLASS_STERILE,
    CargoClass.CLEAN: common_pb2.CARGO_CLASS_CLEAN,
    CargoClass.LINEN: common_pb2.CARGO_CLASS_LINEN,
    CargoClass.SOILED: common_pb2.CARGO_CLASS_SOILED,
    CargoClass.WASTE: common_pb2.CARGO_CLASS_WASTE,
    CargoClass.CONTROLLED_DRUG: common_pb2.CARGO_CLASS_CONTROLLED_DRUG,
}
CARGO_FROM_PB = {v: k for k, v in CARGO_TO_PB.items()}

PRIORITY_TO_PB = {
    Priority.ROUTINE: common_pb2.PRIORITY_ROUTINE,
    Priority.URGENT: common_pb2.PRIORITY_URGENT,
    Priority.STAT: common_pb2.PRIORITY_STAT,
}
PRIORITY_FROM_PB = {v: k for k, v in PRIORITY_TO_PB.items()}

STATE_TO_PB = {
    OrderState.PENDING: orders_pb2.ORDER_STATE_PENDING,
    OrderState.ASSIGNED: orders_pb2.ORDER_STATE_ASSIGNED,
    OrderState.PICKED_UP: orders_pb2.ORDER_STATE_PICKED_UP,
    OrderState.DELIVERED: orders_pb2.ORDER_STATE_DELIVERED,
    OrderState.CANCELLED: orders_pb2.ORDER_STATE_CANCELLED,
    OrderState.FAILED: orders_pb2.ORDER_STATE_FAILED,
}
STATE_FROM_PB = {v: k for k, v in STATE_TO_PB.items()}

MODE_TO_PB = {
    RobotMode.IDLE: robot_pb2.ROBOT_MODE_IDLE,
    RobotMode.BUSY: robot_pb2.ROBOT_MODE_BUSY,
    RobotMode.CHARGING: robot_pb2.ROBOT_MODE_CHARGING,
    RobotMode.PAUSED: robot_pb2.ROBOT_MODE_PAUSED,
    RobotMode.FAULT: robot_pb2.ROBOT_MODE_FAULT,
    RobotMode.OFFLINE: robot_pb2.ROBOT_MODE_OFFLINE,
}
MODE_FROM_PB = {v: k for k, v in MODE_TO_PB.items()}

DOOR_MODE_FROM_PB = {
    infrastructure_pb2.DOOR_MODE_CLOSED: m.DoorMode.CLOSED,
    infrastructure_pb2.DOOR_MODE_OPENING: m.DoorMode.OPENING,
    infrastructure_pb2.DOOR_MODE_OPEN: m.DoorMode.OPEN,
    infrastructure_pb2.DOOR_MODE_CLOSING: m.DoorMode.CLOSING,
    infrastructure_pb2.DOOR_MODE_BLOCKED: m.DoorMode.BLOCKED,
    infrastructure_pb2.DOOR_MODE_FAULT: m.DoorMode.FAULT,
    infrastructure_pb2.DOOR_MODE_OFFLINE: m.DoorMode.OFFLINE,
}
DOOR_MODE_TO_PB = {v: k for k, v in DOOR_MODE_FROM_PB.items()}

LIFT_DOOR_FROM_PB = {
    infrastructure_pb2.LIFT_DOOR_CLOSED: m.LiftDoorState.CLOSED,
    infrastructure_pb2.LIFT_DOOR_OPEN: m.LiftDoorState.OPEN,
    infrastructure_pb2.LIFT_DOOR_MOVING: m.LiftDoorState.MOVING,
}
LIFT_DOOR_TO_PB = {v: k for k, v in LIFT_DOOR_FROM_PB.items()}

LIFT_MODE_FROM_PB = {
    infrastructure_pb2.LIFT_MODE_NORMAL: m.LiftMode.NORMAL,
    infrastructure_pb2.LIFT_MODE_ROBOT_EXCLUSIVE: m.LiftMode.ROBOT_EXCLUSIVE,
    infrastructure_pb2.LIFT_MODE_OUT_OF_SERVICE: m.LiftMode.OUT_OF_SERVICE,
    infrastructure_pb2.LIFT_MODE_FIRE_RECALL: m.LiftMode.FIRE_RECALL,
    infrastructure_pb2.LIFT_MODE_OFFLINE: m.LiftMode.OFFLINE,
}
LIFT_MODE_TO_PB = {v: k for k, v in LIFT_MODE_FROM_PB.items()}

DOOR_ACTION_TO_PB = {
    m.DoorAction.OPEN: infrastructure_pb2.DOOR_ACTION_OPEN,
    m.DoorAction.CLOSE: infrastructure_pb2.DOOR_ACTION_CLOSE,
}
LIFT_ACTION_TO_PB = {
    m.LiftAction.CALL: infrastructure_pb2.LIFT_ACTION_CALL,
    m.LiftAction.GO_TO: infrastructure_pb2.LIFT_ACTION_GO_TO,
    m.LiftAction.RELEASE: infrastructure_pb2.LIFT_ACTION_RELEASE,
    m.LiftAction.RENEW: infrastructure_pb2.LIFT_ACTION_RENEW,
}
SEVERITY_TO_PB = {
    m.AlertSeverity.INFO: operations_pb2.ALERT_SEVERITY_INFO,
    m.AlertSeverity.WARNING: operations_pb2.ALERT_SEVERITY_WARNING,
    m.AlertSeverity.CRITICAL: operations_pb2.ALERT_SEVERITY_CRITICAL,
}
INSTANT_TO_PB = {
    m.InstantKind.PAUSE: robot_pb2.INSTANT_ACTION_TYPE_PAUSE,
    m.InstantKind.RESUME: robot_pb2.INSTANT_ACTION_TYPE_RESUME,
    m.InstantKind.CANCEL_STEP: robot_pb2.INSTANT_ACTION_TYPE_CANCEL_STEP,
    m.InstantKind.SEAL_COMPARTMENT: robot_pb2.INSTANT_ACTION_TYPE_SEAL_COMPARTMENT,
    m.InstantKind.OPEN_COMPARTMENT: robot_pb2.INSTANT_ACTION_TYPE_OPEN_COMPARTMENT,
}
INSTANT_FROM_PB = {v: k for k, v in INSTANT_TO_PB.items()}


def ts(seconds: float) -> Timestamp:
    """A protobuf Timestamp for epoch seconds."""
    t = Timestamp()
    t.FromNanoseconds(round(seconds * 1e9))
    return t


def seconds(t: Timestamp) -> float:
    """Epoch seconds of a protobuf Timestamp."""
    return t.ToNanoseconds() / 1e9


# ---- orders ----------------------------------------------------------------------------------


def create_order_from_pb(req: orders_pb2.CreateOrderRequest) -> m.CreateOrder:
    """Translate a CreateOrderRequest, rejecting values no order may have."""
    if req.cargo_class not in CARGO_FROM_PB and req.cargo_class != 0:
        raise InvalidArgument("cargo_class", f"unknown value {req.cargo_class}")
    if req.priority not in PRIORITY_FROM_PB and req.priority != 0:
        raise InvalidArgument("priority", f"unknown value {req.priority}")
    return m.CreateOrder(
        pickup_station=req.pickup_station.strip(),
        dropoff_station=req.dropoff_station.strip(),
        cargo_class=CARGO_FROM_PB.get(req.cargo_class),
        quantity=req.quantity,
        priority=PRIORITY_FROM_PB.get(req.priority, Priority.ROUTINE),
        needed_by=seconds(req.needed_by) if req.HasField("needed_by") else None,
        requested_by=req.requested_by,
        note=req.note,
        weight_kg=req.weight_kg,
        return_of=req.return_of.strip(),
    )


def order_to_pb(order: Order) -> orders_pb2.Order:
    """The wire form of an order."""
    pb = orders_pb2.Order(
        id=order.id,
        pickup_station=order.pickup_station,
        dropoff_station=order.dropoff_station,
        cargo_class=CARGO_TO_PB[order.cargo_class],
        quantity=order.quantity,
        priority=PRIORITY_TO_PB[order.priority],
        requested_by=order.requested_by,
        note=order.note,
        state=STATE_TO_PB[order.state],
        robot_id=order.robot_id or "",
        created_at=ts(order.created_at),
        failure_reason=order.failure_reason,
        weight_kg=order.weight_kg,
        return_of=order.return_of,
        # Compartments are numbered from 1 on the wire, so that 0 (unset) means "not known".
        compartment=0 if order.compartment is None else order.compartment + 1,
    )
    if order.needed_by is not None:
        pb.needed_by.CopyFrom(ts(order.needed_by))
    if order.eta is not None:
        pb.eta.CopyFrom(ts(order.eta))
    if order.picked_up_at is not None:
        pb.picked_up_at.CopyFrom(ts(order.picked_up_at))
    if order.delivered_at is not None:
        pb.delivered_at.CopyFrom(ts(order.delivered_at))
    for ev in order.history:
        pb.history.add(at=ts(ev.at), state=STATE_TO_PB[ev.state], detail=ev.detail)
    return pb


# ---- robots ----------------------------------------------------------------------------------


def robot_message_from_pb(
    msg: robot_pb2.RobotMessage, robot_id: str, compartments: int | None = None
) -> m.Inbound:
    """Translate one message of a robot stream whose hello named `robot_id`.

    `compartments`: how many compartments that hello announced (None: not known), the highest
    compartment number a state report may name.
    """
    kind = msg.WhichOneof("msg")
    if kind == "hello":
        return hello_from_pb(msg.hello)
    if kind == "state":
        s = msg.state
        _same_robot(s.robot_id, robot_id)
        return m.RobotStateReport(
            robot_id=robot_id,
            level=s.pose.level,
            x=s.pose.x,
            y=s.pose.y,
            node=s.last_node,
            battery_percent=s.battery_percent,
            mode=MODE_FROM_PB.get(s.mode, RobotMode.IDLE),
            errors=tuple(s.errors),
            compartments=compartments_from_pb(s.compartments, compartments),
        )
    if kind == "progress":
        p = msg.progress
        _same_robot(p.robot_id, robot_id)
        outcome = {
            robot_pb2.STEP_STATUS_STARTED: m.StepOutcome.STARTED,
            robot_pb2.STEP_STATUS_COMPLETED: m.StepOutcome.COMPLETED,
            robot_pb2.STEP_STATUS_FAILED: m.StepOutcome.FAILED,
        }.get(p.status)
        if outcome is None:
            raise InvalidArgument("progress.status", "must be STARTED, COMPLETED or FAILED")
        return m.StepReport(robot_id, p.step_id, outcome, p.detail, p.node)
    raise InvalidArgument("msg", "empty robot message")


def compartments_from_pb(
    statuses: Iterable[robot_pb2.CompartmentStatus], count: int | None = None
) -> tuple[m.CompartmentStatus, ...]:
    """A robot's compartment report, sorted by number; InvalidArgument naming the field for a
    number below 1 (or above `count`, the compartments its hello announced, when known), a
    number reported twice, or a door reported open and locked at once.

    A compartment with no seal id counts as intact (there is no seal to break); a sealed one
    is intact only when the robot says so (proto3 leaves an unset flag false: fail safe)."""
    out: dict[int, m.CompartmentStatus] = {}
    for i, c in enumerate(statuses):
        field = f"state.compartments[{i}]"
        if c.number < 1:
            raise InvalidArgument(f"{field}.number", f"must be >= 1, got {c.number}")
        if count is not None and c.number > count:
            raise InvalidArgument(
                f"{field}.number",
                f"compartment {c.number} does not exist: the hello announced {count}",
            )
        if c.number in out:
            raise InvalidArgument(f"{field}.number", f"compartment {c.number} reported twice")
        if c.open and c.locked:
            raise InvalidArgument(f"{field}.locked", "an open compartment cannot be locked")
        out[c.number] = m.CompartmentStatus(
            number=c.number,
            locked=c.locked,
            seal_id=c.seal_id,
            seal_intact=c.seal_intact if c.seal_id else True,
            open=c.open,
        )
    return tuple(out[n] for n in sorted(out))


def compartment_status_to_pb(c: m.CompartmentStatus) -> robot_pb2.CompartmentStatus:
    """The wire form of one compartment's state (what a robot reports)."""
    return robot_pb2.CompartmentStatus(
        number=c.number,
        locked=c.locked,
        seal_id=c.seal_id,
        seal_intact=c.seal_intact,
        open=c.open,
    )


def _same_robot(given: str, expected: str) -> None:
    if given and given != expected:
        raise InvalidArgument("robot_id", f"unknown robot {given!r} on the stream of {expected!r}")


def hello_from_pb(h: robot_pb2.RobotHello) -> m.RobotHello:
    """Translate a robot's hello, rejecting incomplete ones with the field named."""
    if not h.robot_id:
        raise InvalidArgument("hello.robot_id", "is required")
    classes = []
    for c in h.cargo_classes:
        if c not in CARGO_FROM_PB:
            raise InvalidArgument("hello.cargo_classes", f"unknown value {c}")
        classes.append(CARGO_FROM_PB[c])
    if not classes:
        raise InvalidArgument("hello.cargo_classes", "at least one cargo class is required")
    if not h.current_node:
        raise InvalidArgument("hello.current_node", "is required")
    if not (h.max_payload_kg >= 0 and math.isfinite(h.max_payload_kg)):
        raise InvalidArgument("hello.max_payload_kg", "must be a finite number >= 0 (0: no limit)")
    if h.compartments < 0:
        raise InvalidArgument("hello.compartments", "must be >= 0 (0: no compartment rule)")
    caps = RobotCapabilities(
        vendor=h.vendor,
        model=h.model,
        cargo_classes=frozenset(classes),
        capacity_slots=h.capacity_slots,
        max_speed_m_s=h.max_speed_m_s,
        max_payload_kg=h.max_payload_kg or None,
        compartments=h.compartments or None,
    )
    return m.RobotHello(
        robot_id=h.robot_id,
        capabilities=caps,
        node=h.current_node,
        carrying=tuple(h.carrying_order_ids),
        battery_percent=h.battery_percent,
        in_lift=h.in_lift,
    )


def dispatcher_message_to_pb(
    out: m.WelcomeRobot | m.SendStep | m.SendInstantAction, building: Building
) -> robot_pb2.DispatcherMessage:
    """The wire form of a message for a robot."""
    if isinstance(out, m.WelcomeRobot):
        return robot_pb2.DispatcherMessage(
            welcome=robot_pb2.Welcome(
                robot_id=out.robot_id, map_name=out.map_name, state_interval_s=out.state_interval_s
            )
        )
    if isinstance(out, m.SendInstantAction):
        return robot_pb2.DispatcherMessage(action=instant_action_to_pb(out))
    step = out.step
    cmd = robot_pb2.StepCommand(step_id=out.step_id, order_ids=list(step.order_ids))
    if step.kind is StepKind.MOVE:
        cmd.move.CopyFrom(
            robot_pb2.MoveStep(
                from_node=step.from_node,
                to_node=step.to_node,
                target=_pose(building, step.to_node),
                distance_m=step.distance_m,
                max_speed_m_s=step.speed_limit_m_s or 0.0,
                door_id=step.door,
            )
        )
    elif step.kind is StepKind.LIFT_ENTER:
        cmd.enter_lift.CopyFrom(
            robot_pb2.EnterLiftStep(lift_id=step.lift, level=step.level, session_id=out.session_id)
        )
    elif step.kind is StepKind.LIFT_EXIT:
        cmd.exit_lift.CopyFrom(
            robot_pb2.ExitLiftStep(
                lift_id=step.lift,
                level=step.level,
                to_node=step.to_node,
                target=_pose(building, step.to_node),
            )
        )
    elif step.kind is StepKind.PICKUP:
        cmd.pickup.CopyFrom(
            robot_pb2.PickupStep(
                station=step.station,
                quantity=step.quantity,
                compartments=_compartments(step),
                secure=step.secure,
            )
        )
    elif step.kind is StepKind.DROPOFF:
        cmd.dropoff.CopyFrom(
            robot_pb2.DropoffStep(
                station=step.station,
                quantity=step.quantity,
                compartments=_compartments(step),
                secure=step.secure,
            )
        )
    elif step.kind is StepKind.CHARGE:
        cmd.charge.CopyFrom(
            robot_pb2.ChargeStep(
                station=step.station,
                target_percent=step.target_percent,
                max_duration_s=step.max_duration_s,
            )
        )
    else:  # pragma: no cover - dispatcher-side steps are never sent
        raise ValueError(f"{step.kind} is not a robot step")
    return robot_pb2.DispatcherMessage(step=cmd)


def instant_action_to_pb(out: m.SendInstantAction) -> robot_pb2.InstantAction:
    """The wire form of an instant action; the custody fields only for the kinds that use them
    (SEAL: compartment, seal_id; OPEN: compartment, grant_id, staff_id, open_for_s)."""
    pb = robot_pb2.InstantAction(
        action_id=out.action_id, type=INSTANT_TO_PB[out.kind], reason=out.reason
    )
    if out.kind is m.InstantKind.SEAL_COMPARTMENT:
        pb.compartment, pb.seal_id = out.compartment, out.seal_id
    elif out.kind is m.InstantKind.OPEN_COMPARTMENT:
        pb.compartment, pb.grant_id, pb.staff_id = out.compartment, out.grant_id, out.staff_id
        pb.open_for_s = out.open_for_s
    return pb


def instant_action_from_pb(pb: robot_pb2.InstantAction, robot_id: str) -> m.SendInstantAction:
    """The core form of an instant action (what a robot, or a test, reads back from the wire);
    InvalidArgument naming the field for an unknown type or a custody action without the
    fields it needs."""
    kind = INSTANT_FROM_PB.get(pb.type)
    if kind is None:
        raise InvalidArgument("action.type", f"unknown value {pb.type}")
    custody = (m.InstantKind.SEAL_COMPARTMENT, m.InstantKind.OPEN_COMPARTMENT)
    if kind in custody and pb.compartment < 1:
        raise InvalidArgument("action.compartment", f"must be >= 1, got {pb.compartment}")
    if kind is m.InstantKind.SEAL_COMPARTMENT and not pb.seal_id:
        raise InvalidArgument("action.seal_id", "is required to seal a compartment")
    if kind is m.InstantKind.OPEN_COMPARTMENT:
        if not pb.grant_id:
            raise InvalidArgument("action.grant_id", "is required to open a compartment")
        if not pb.staff_id:
            raise InvalidArgument("action.staff_id", "is required to open a compartment")
        if not (pb.open_for_s > 0 and math.isfinite(pb.open_for_s)):
            raise InvalidArgument("action.open_for_s", "must be a finite number > 0")
    return m.SendInstantAction(
        robot_id=robot_id,
        action_id=pb.action_id,
        kind=kind,
        reason=pb.reason,
        compartment=pb.compartment,
        seal_id=pb.seal_id,
        grant_id=pb.grant_id,
        staff_id=pb.staff_id,
        open_for_s=pb.open_for_s,
    )


def _compartments(step: Step) -> list[robot_pb2.CompartmentUse]:
    """A step's compartments on the wire: numbered from 1, as labelled on the robot."""
    return [
        robot_pb2.CompartmentUse(order_id=order_id, compartment=index + 1)
        for order_id, index in step.compartments
    ]


def _pose(building: Building, node: str) -> common_pb2.Pose:
    n = building.nodes[node]
    return common_pb2.Pose(level=n.level, x=n.x, y=n.y)


# ---- infrastructure --------------------------------------------------------------------------


def infrastructure_message_from_pb(
    msg: infrastructure_pb2.InfrastructureMessage, controller_id: str = ""
) -> m.Inbound:
    """Translate one message of a door/lift controller stream.

    `controller_id`: the controller whose hello opened the stream ("" when not known), named
    in a fire alarm it relays.
    """
    kind = msg.WhichOneof("msg")
    if kind == "hello":
        h = msg.hello
        if not h.controller_id:
            raise InvalidArgument("hello.controller_id", "is required")
        return m.ControllerHello(h.controller_id, tuple(h.door_ids), tuple(h.lift_ids))
    if kind == "door_state":
        d = msg.door_state
        if d.mode not in DOOR_MODE_FROM_PB:
            raise InvalidArgument("door_state.mode", "is required")
        return m.DoorReport(d.door_id, DOOR_MODE_FROM_PB[d.mode], d.session_id, d.fault_detail)
    if kind == "lift_state":
        s = msg.lift_state
        if s.door not in LIFT_DOOR_FROM_PB:
            raise InvalidArgument("lift_state.door", "is required")
        if s.mode not in LIFT_MODE_FROM_PB:
            raise InvalidArgument("lift_state.mode", "is required")
        if not (s.lease_remaining_s >= 0 and math.isfinite(s.lease_remaining_s)):
            raise InvalidArgument(
                "lift_state.lease_remaining_s", "must be a finite number >= 0 (0: no lease)"
            )
        return m.LiftReport(
            lift_id=s.lift_id,
            level=s.current_level,
            door=LIFT_DOOR_FROM_PB[s.door],
            mode=LIFT_MODE_FROM_PB[s.mode],
            session_id=s.session_id,
            destination=s.destination_level,
            fault=s.fault_detail,
            lease_remaining_s=s.lease_remaining_s,
        )
    if kind == "fire_alarm":
        a = msg.fire_alarm
        return m.FireAlarm(active=a.active, controller_id=controller_id, detail=a.detail)
    if kind == "ack":
        k = msg.ack
        if not k.device_id:
            raise InvalidArgument("ack.device_id", "is required")
        if not k.session_id:
            raise InvalidArgument("ack.session_id", "is required")
        return m.RequestAck(k.device_id, k.session_id, k.accepted, k.reason)
    raise InvalidArgument("msg", "empty infrastructure message")


def infrastructure_command_to_pb(
    out: m.DoorCommand | m.LiftCommand,
) -> infrastructure_pb2.InfrastructureCommand:
    """The wire form of a door or lift request."""
    if isinstance(out, m.DoorCommand):
        return infrastructure_pb2.InfrastructureCommand(
            door=infrastructure_pb2.DoorRequest(
                door_id=out.door_id,
                session_id=out.session_id,
                robot_id=out.robot_id,
                action=DOOR_ACTION_TO_PB[out.action],
            )
        )
    return infrastructure_pb2.InfrastructureCommand(
        lift=infrastructure_pb2.LiftRequest(
            lift_id=out.lift_id,
            session_id=out.session_id,
            robot_id=out.robot_id,
            action=LIFT_ACTION_TO_PB[out.action],
            level=out.level,
            lease_s=out.lease_s,
        )
    )


# ---- operations ------------------------------------------------------------------------------

OperatorRequest = (
    operations_pb2.OperatorRobotRequest
    | operations_pb2.OperatorLaneRequest
    | operations_pb2.OperatorDoorRequest
    | operations_pb2.OperatorLiftRequest
)

# The request field that names an action's target, for errors about the target.
OPERATOR_TARGET_FIELD = {
    m.OperatorAction.PAUSE_ROBOT: "robot_id",
    m.OperatorAction.RESUME_ROBOT: "robot_id",
    m.OperatorAction.CLOSE_LANE: "lane",
    m.OperatorAction.REOPEN_LANE: "lane",
    m.OperatorAction.CLOSE_DOOR: "door_id",
    m.OperatorAction.REOPEN_DOOR: "door_id",
    m.OperatorAction.CLOSE_LIFT: "lift_id",
    m.OperatorAction.REOPEN_LIFT: "lift_id",
}
_ROBOT_ACTIONS = (m.OperatorAction.PAUSE_ROBOT, m.OperatorAction.RESUME_ROBOT)
_LANE_ACTIONS = (m.OperatorAction.CLOSE_LANE, m.OperatorAction.REOPEN_LANE)


def operator_command_from_pb(
    action: m.OperatorAction, request: OperatorRequest
) -> m.OperatorCommand:
    """Translate an operator control; the core checks that the target exists.

    Only a robot action may leave its target empty (every robot). A lane must be written the
    way the map names lanes (`A--B` or `A->B`), so that a typo is told apart from an unknown lane.
    """
    field = OPERATOR_TARGET_FIELD[action]
    target = str(getattr(request, field)).strip()
    if not target and action not in _ROBOT_ACTIONS:
        raise InvalidArgument(field, "is required")
    if action in _LANE_ACTIONS:
        start, _, end = target.partition("--" if "--" in target else "->")
        if not start.strip() or not end.strip():
            raise InvalidArgument(
                field, f"{target!r} is not a lane name: write A--B (two-way) or A->B (one-way)"
            )
    return m.OperatorCommand(
        action=action,
        target=target,
        reason=request.reason.strip(),
        operator=request.operator_id.strip(),
    )


def alert_to_pb(alert: m.Alert) -> operations_pb2.Alert:
    """The wire form of an alert."""
    return operations_pb2.Alert(
        at=ts(alert.at),
        code=alert.code,
        severity=SEVERITY_TO_PB[alert.severity],
        subject=alert.subject,
        message=alert.message,
        robots=list(alert.robots),
        cleared=alert.cleared,
    )
