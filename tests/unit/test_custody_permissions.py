"""Who may do what in the custody lifecycle, and the two-person rules of custody steps."""

from __future__ import annotations

import dataclasses

import pytest

from fleet.custody.ledger import AuthFactor
from fleet.custody.people import (
    Authentication,
    AuthenticationFailed,
    PinHashing,
    Role,
    StaffDirectory,
    StaffMember,
)
from fleet.custody.permissions import (
    PERMISSIONS,
    STEP_RULES,
    Action,
    SecondPerson,
    StepAuth,
    allowed_actions,
    authorize,
    require_two_people,
)
from fleet.domain.errors import InvalidArgument, PermissionDenied

T0 = 1_740_817_800.0
FAST = PinHashing(cost=(16, 1, 1))

PEOPLE = {
    "ph1": StaffMember("ph1", "Chen Jing", frozenset({Role.PHARMACIST}), "pharmacy"),
    "ph2": StaffMember("ph2", "Ngozi Okafor", frozenset({Role.PHARMACIST}), "pharmacy"),
    "an1": StaffMember("an1", "Wang Lei", frozenset({Role.ANESTHESIOLOGIST}), "anesthesiology"),
    "n1": StaffMember("n1", "Zhang Min", frozenset({Role.OR_NURSE}), "or-suite"),
    "n2": StaffMember("n2", "Priya Patel", frozenset({Role.OR_NURSE}), "or-suite"),
    "log1": StaffMember("log1", "Tomas Novak", frozenset({Role.LOGISTICS}), "logistics"),
    "aud1": StaffMember("aud1", "Samir Haddad", frozenset({Role.AUDITOR}), "audit"),
    # Someone with two roles, to show that holding both parts' permissions is not enough.
    "dual": StaffMember(
        "dual", "Lucia Garcia", frozenset({Role.PHARMACIST, Role.ANESTHESIOLOGIST}), "pharmacy"
    ),
}
PIN = {pid: f"{2580 + 7 * i:04d}" for i, pid in enumerate(PEOPLE)}


@pytest.fixture
def directory() -> StaffDirectory:
    d = StaffDirectory(hashing=FAST)
    for pid, member in PEOPLE.items():
        d.add(member, f"B-{pid}", PIN[pid])
    return d


def auth(d: StaffDirectory, pid: str, at: float = T0) -> Authentication:
    return d.authenticate(pid, f"B-{pid}", PIN[pid], at)


# -- the permission table ------------------------------------------------------------------------


def test_the_permission_table() -> None:
    A = Action
    assert dict(PERMISSIONS) == {
        Role.PHARMACIST: {
            A.APPROVE,
            A.REJECT,
            A.PICK,
            A.VERIFY,
            A.LOAD,
            A.RETURN_RECEIVE,
            A.RESOLVE_DISCREPANCY,
            A.APPROVE_RESOLUTION,
            A.WITNESS,
            A.RECOVER,
            A.READ_LEDGER,
        },
        Role.ANESTHESIOLOGIST: {
            A.REQUEST,
            A.RECEIVE,
            A.ADMINISTER,
            A.WASTE,
            A.WITNESS,
            A.RECONCILE,
            A.RESOLVE_DISCREPANCY,
        },
        Role.OR_NURSE: {A.REQUEST, A.RECEIVE, A.WITNESS, A.RECONCILE, A.RESOLVE_DISCREPANCY},
        Role.LOGISTICS: {A.RECOVER},
        Role.AUDITOR: {A.READ_LEDGER},
    }
    # Every action is some role's, and every action but WITNESS (a part) is a step.
    assert set().union(*PERMISSIONS.values()) == set(Action)
    assert set(STEP_RULES) == set(Action) - {Action.WITNESS}


def test_a_nurse_cannot_approve() -> None:
    with pytest.raises(PermissionDenied) as info:
        authorize(PEOPLE["n1"], Action.APPROVE)
    assert str(info.value) == "Zhang Min (n1; roles: or_nurse) may not approve"


def test_an_auditor_can_only_read_the_ledger() -> None:
    auditor = PEOPLE["aud1"]
    assert allowed_actions(auditor) == {Action.READ_LEDGER}
    authorize(auditor, Action.READ_LEDGER)
    for action in set(Action) - {Action.READ_LEDGER}:
        with pytest.raises(PermissionDenied, match=r"auditor\) may not"):
            authorize(auditor, action)


def test_roles_add_up_and_inactive_people_may_do_nothing() -> None:
    dual = PEOPLE["dual"]
    assert (
        allowed_actions(dual) == PERMISSIONS[Role.PHARMACIST] | PERMISSIONS[Role.ANESTHESIOLOGIST]
    )
    gone = dataclasses.replace(PEOPLE["ph1"], active=False)
    assert allowed_actions(gone) == frozenset()
    with pytest.raises(PermissionDenied, match="inactive and may not pick"):
        authorize(gone, Action.PICK)


@pytest.mark.parametrize(
    ("pid", "action"),
    [
        ("n1", Action.ADMINISTER),
        ("n1", Action.WASTE),
        ("an1", Action.APPROVE),
        ("ph1", Action.REQUEST),
        ("ph1", Action.ADMINISTER),
        ("log1", Action.LOAD),
        ("log1", Action.WITNESS),
        ("log1", Action.RECEIVE),
    ],
)
def test_refusals_from_the_table(pid: str, action: Action) -> None:
    with pytest.raises(PermissionDenied, match=f"may not {action.value.replace('_', ' ')}$"):
        authorize(PEOPLE[pid], action)


# -- steps: one person ---------------------------------------------------------------------------


def test_the_picker_cannot_verify_their_own_pick(directory: StaffDirectory) -> None:
    steps = StepAuth(directory)
    with pytest.raises(PermissionDenied, match=r"Chen Jing \(ph1; .*may take no part"):
        steps.check(Action.VERIFY, auth(directory, "ph1"), now=T0 + 1, exclude={"ph1"})
    step = steps.check(Action.VERIFY, auth(directory, "ph2"), now=T0 + 1, exclude={"ph1"})
    assert (step.actor.id, step.witness, step.witness_id) == ("ph2", None, "")
    with pytest.raises(PermissionDenied, match="may not verify"):
        steps.check(Action.VERIFY, auth(directory, "n1"), now=T0 + 1, exclude={"ph1"})


def test_a_pharmacist_cannot_be_their_own_second_checker(directory: StaffDirectory) -> None:
    first, same = auth(directory, "ph1"), auth(directory, "ph1", T0 + 5)
    with pytest.raises(PermissionDenied, match="their own second person for pick"):
        require_two_people(first, same, Action.PICK, directory, now=T0 + 10)
    with pytest.raises(PermissionDenied, match=r"may not verify \(as the second person for pick"):
        require_two_people(first, auth(directory, "n1"), Action.PICK, directory, now=T0 + 10)
    picker, checker = require_two_people(
        first, auth(directory, "ph2"), Action.PICK, directory, now=T0 + 10
    )
    assert (picker.id, checker.id) == ("ph1", "ph2")


def test_recipient_two_factors_open_the_compartment(directory: StaffDirectory) -> None:
    """A robot compartment opens (RECEIVE) only on the named recipient's own badge and PIN,
    entered for this step."""
    steps = StepAuth(directory)
    recipient = {"n1"}
    made_up = Authentication("n1", (AuthFactor.BADGE, AuthFactor.PIN), T0)
    with pytest.raises(AuthenticationFailed, match="not issued"):
        steps.check(Action.RECEIVE, made_up, now=T0, actor_in=recipient)
    with pytest.raises(AuthenticationFailed, match="s old"):
        steps.check(Action.RECEIVE, auth(directory, "n1", T0), now=T0 + 121, actor_in=recipient)
    with pytest.raises(PermissionDenied, match=r"not the person for this receive \(expected: n1"):
        steps.check(Action.RECEIVE, auth(directory, "n2"), now=T0, actor_in=recipient)
    with pytest.raises(PermissionDenied, match="may not receive"):
        steps.check(Action.RECEIVE, auth(directory, "log1"), now=T0)
    with pytest.raises(AuthenticationFailed):
        directory.authenticate("n1", "B-n1", "0000", T0)  # a wrong PIN gives no authentication
    step = steps.check(Action.RECEIVE, auth(directory, "n1"), now=T0 + 30, actor_in=recipient)
    assert step.actor.id == "n1"
    assert step.actor_auth == (AuthFactor.BADGE, AuthFactor.PIN)
    assert step.at == T0 + 30


def test_stale_authentication_is_refused(directory: StaffDirectory) -> None:
    steps = StepAuth(directory)
    load = auth(directory, "ph1", T0)
    assert steps.check(Action.LOAD, load, now=T0 + 120).actor.id == "ph1"
    with pytest.raises(AuthenticationFailed, match="121 s old"):
        steps.check(Action.LOAD, load, now=T0 + 121)
    # A stricter window for a site that wants it.
    with pytest.raises(AuthenticationFailed, match="at most 30 s"):
        StepAuth(directory, max_age_s=30).check(Action.LOAD, load, now=T0 + 31)
    # The witness's factors must be fresh too.
    old_witness = auth(directory, "n1", T0)
    with pytest.raises(AuthenticationFailed, match="n1"):
        steps.check(Action.WASTE, auth(directory, "an1", T0 + 200), old_witness, now=T0 + 200)


def test_an_authentication_from_another_directory_is_refused(directory: StaffDirectory) -> None:
    other = StaffDirectory(hashing=FAST)
    other.add(PEOPLE["ph1"], "B-ph1", PIN["ph1"])
    with pytest.raises(AuthenticationFailed, match="not issued"):
        StepAuth(directory).check(Action.LOAD, auth(other, "ph1"), now=T0)


def test_someone_deactivated_after_authenticating_may_not_act(directory: StaffDirectory) -> None:
    a = auth(directory, "ph1")
    directory.update(dataclasses.replace(PEOPLE["ph1"], active=False))
    with pytest.raises(AuthenticationFailed, match="inactive"):
        StepAuth(directory).check(Action.LOAD, a, now=T0 + 1)


# -- steps: two people ---------------------------------------------------------------------------


def test_waste_needs_a_witness_who_is_someone_else(directory: StaffDirectory) -> None:
    steps = StepAuth(directory)
    with pytest.raises(InvalidArgument) as info:
        steps.check(Action.WASTE, auth(directory, "an1"), now=T0)
    assert info.value.field == "witness_auth"
    with pytest.raises(PermissionDenied, match="their own second person for waste"):
        steps.check(
            Action.WASTE, auth(directory, "an1"), auth(directory, "an1", T0 + 1), now=T0 + 2
        )
    with pytest.raises(PermissionDenied, match=r"may not witness \(as the second person"):
        steps.check(Action.WASTE, auth(directory, "an1"), auth(directory, "log1"), now=T0)
    with pytest.raises(PermissionDenied, match="may not waste"):
        steps.check(Action.WASTE, auth(directory, "n1"), auth(directory, "an1"), now=T0)
    step = steps.check(Action.WASTE, auth(directory, "an1"), auth(directory, "n1"), now=T0)
    assert (step.actor.id, step.witness_id) == ("an1", "n1")
    assert step.witness_auth == (AuthFactor.BADGE, AuthFactor.PIN)


def test_a_pharmacist_cannot_witness_their_own_waste(directory: StaffDirectory) -> None:
    """`dual` is a pharmacist and an anesthesiologist: holding both WASTE and WITNESS is no
    licence to witness oneself."""
    first = auth(directory, "dual")
    with pytest.raises(PermissionDenied, match=r"Lucia Garcia \(dual; .*their own second person"):
        require_two_people(
            first, auth(directory, "dual", T0 + 1), Action.WASTE, directory, now=T0 + 2
        )
    # The same for a pharmacist's own witnessed step (receiving a return).
    with pytest.raises(PermissionDenied, match="their own second person for return receive"):
        require_two_people(
            auth(directory, "ph1"),
            auth(directory, "ph1", T0 + 1),
            Action.RETURN_RECEIVE,
            directory,
            now=T0 + 2,
        )
    a, b = require_two_people(first, auth(directory, "ph2"), Action.WASTE, directory, now=T0 + 2)
    assert (a.id, b.id) == ("dual", "ph2")


def test_recover_is_led_by_a_pharmacist_with_logistics_or_a_pharmacist_second(
    directory: StaffDirectory,
) -> None:
    def recover(first: str, second: str) -> tuple[str, str]:
        a, b = require_two_people(
            auth(directory, first), auth(directory, second), Action.RECOVER, directory, now=T0
        )
        return a.id, b.id

    assert recover("ph1", "log1") == ("ph1", "log1")
    assert recover("ph1", "ph2") == ("ph1", "ph2")
    with pytest.raises(PermissionDenied, match=r"may not lead recover \(only: pharmacist\)"):
        recover("log1", "ph1")
    with pytest.raises(PermissionDenied, match=r"may not recover \(as the second person"):
        recover("ph1", "n1")
    with pytest.raises(InvalidArgument, match="witness_auth"):
        StepAuth(directory).check(Action.RECOVER, auth(directory, "ph1"), now=T0)


def test_discrepancy_resolution_and_its_approval(directory: StaffDirectory) -> None:
    steps = StepAuth(directory)
    resolved = steps.check(
        Action.RESOLVE_DISCREPANCY, auth(directory, "n1"), auth(directory, "ph1"), now=T0
    )
    took_part = {resolved.actor.id, resolved.witness_id}
    with pytest.raises(PermissionDenied, match="may take no part"):
        steps.check(Action.APPROVE_RESOLUTION, auth(directory, "ph1"), now=T0, exclude=took_part)
    with pytest.raises(PermissionDenied, match="may not approve resolution"):
        steps.check(Action.APPROVE_RESOLUTION, auth(directory, "an1"), now=T0, exclude=took_part)
    approved = steps.check(
        Action.APPROVE_RESOLUTION, auth(directory, "ph2"), now=T0, exclude=took_part
    )
    assert approved.actor.id == "ph2"


def test_exclude_covers_the_second_person_too(directory: StaffDirectory) -> None:
    with pytest.raises(PermissionDenied, match=r"Zhang Min \(n1; .*may take no part"):
        StepAuth(directory).check(
            Action.WASTE, auth(directory, "an1"), auth(directory, "n1"), now=T0, exclude={"n1"}
        )


def test_optional_and_absent_second_people(directory: StaffDirectory) -> None:
    steps = StepAuth(directory)
    for action, rule in STEP_RULES.items():
        if rule.second is SecondPerson.NONE:
            with pytest.raises(InvalidArgument, match="has no second person"):
                steps.check(action, auth(directory, "ph1"), auth(directory, "ph2"), now=T0)
    assert steps.check(Action.RECONCILE, auth(directory, "n1"), now=T0).witness is None
    assert (
        steps.check(
            Action.RECONCILE, auth(directory, "n1"), auth(directory, "an1"), now=T0
        ).witness_id
        == "an1"
    )
    with pytest.raises(InvalidArgument) as info:
        steps.check(Action.WITNESS, auth(directory, "n1"), now=T0)
    assert info.value.field == "action"
    with pytest.raises(InvalidArgument, match="has no second person"):
        require_two_people(
            auth(directory, "ph1"), auth(directory, "ph2"), Action.LOAD, directory, now=T0
        )


@pytest.mark.parametrize(
    ("action", "pid"),
    [
        (Action.REQUEST, "an1"),
        (Action.REQUEST, "n1"),
        (Action.APPROVE, "ph1"),
        (Action.REJECT, "ph1"),
        (Action.PICK, "ph1"),
        (Action.LOAD, "ph1"),
        (Action.ADMINISTER, "an1"),
        (Action.READ_LEDGER, "aud1"),
        (Action.READ_LEDGER, "ph1"),
    ],
)
def test_one_person_steps_pass_for_the_right_role(
    directory: StaffDirectory, action: Action, pid: str
) -> None:
    step = StepAuth(directory).check(action, auth(directory, pid), now=T0 + 60)
    assert (step.action, step.actor.id, step.witness) == (action, pid, None)
