"""Staff, badge + PIN authentication, lockout and unlock, PIN storage, and the staff file."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.custody.ledger import AuthFactor
from fleet.custody.people import (
    INACTIVE,
    NOT_ACCEPTED,
    PBKDF2,
    AttemptKind,
    Authentication,
    AuthenticationFailed,
    LockState,
    PinHash,
    PinHashing,
    Role,
    StaffDirectory,
    StaffFileError,
    StaffMember,
    load_staff,
)
from fleet.domain.errors import InvalidArgument, NotFound, PermissionDenied

T0 = 1_740_817_800.0  # 2025-03-01T08:30:00Z
FAST = PinHashing(cost=(16, 1, 1))  # cheap scrypt: tests hash thousands of PINs
STAFF_FILE = Path(__file__).resolve().parents[2] / "simulators" / "data" / "staff.yaml"

PHARMACIST = StaffMember("ph1", "Chen Jing", frozenset({Role.PHARMACIST}), "pharmacy")
PHARMACIST_2 = StaffMember("ph2", "Erik Lindqvist", frozenset({Role.PHARMACIST}), "pharmacy")
NURSE = StaffMember("n1", "Zhang Min", frozenset({Role.OR_NURSE}), "or-suite")
PINS = {"ph1": "2580", "ph2": "4826", "n1": "9417"}
BADGES = {"ph1": "B-1", "ph2": "B-2", "n1": "B-3"}


def directory(**kw: Any) -> StaffDirectory:
    d = StaffDirectory(hashing=FAST, **kw)
    for m in (PHARMACIST, PHARMACIST_2, NURSE):
        d.add(m, BADGES[m.id], PINS[m.id])
    return d


def login(d: StaffDirectory, staff_id: str, now: float = T0) -> Authentication:
    return d.authenticate(staff_id, BADGES[staff_id], PINS[staff_id], now)


def fail(d: StaffDirectory, staff_id: str, badge: str, pin: str, now: float) -> str:
    with pytest.raises(AuthenticationFailed) as info:
        d.authenticate(staff_id, badge, pin, now)
    return info.value.reason


# -- authentication ------------------------------------------------------------------------------


def test_right_badge_and_pin_authenticate_with_two_factors() -> None:
    d = directory()
    auth = login(d, "n1", T0)
    assert (auth.staff_id, auth.factors, auth.at) == ("n1", (AuthFactor.BADGE, AuthFactor.PIN), T0)
    assert d.check_authentication(auth, T0 + 5) == NURSE
    assert d.attempts[-1] == dataclasses.replace(d.attempts[-1], at=T0, staff_id="n1", ok=True)


def test_a_failure_never_says_which_factor_was_wrong() -> None:
    d = directory()
    wrong_pin = fail(d, "n1", "B-3", "9418", T0)
    wrong_badge = fail(d, "n1", "B-1", "9417", T0 + 1)
    both = fail(d, "n1", "B-9", "1357", T0 + 2)
    unknown = fail(d, "nobody", "B-3", "9417", T0 + 3)
    assert wrong_pin == wrong_badge == both == unknown == NOT_ACCEPTED
    for attempt in d.attempts:
        assert not attempt.ok
        assert attempt.reason == NOT_ACCEPTED
        assert "9418" not in attempt.reason and "1357" not in attempt.reason
    # Whichever factor was wrong, the counter moved the same way.
    assert d.lock_state("n1").failures == 3


def test_lockout_after_max_failures_for_lockout_s() -> None:
    d = directory(max_failures=5, lockout_s=900.0)
    for i in range(4):
        assert fail(d, "n1", "B-3", "0000", T0 + i) == NOT_ACCEPTED
    fifth = fail(d, "n1", "B-3", "0000", T0 + 4)
    assert fifth == f"{NOT_ACCEPTED}; too many failed attempts: locked until 2025-03-01T08:45:04Z"
    assert d.is_locked("n1", T0 + 5)
    # The right factors do not help while locked, and the reason says until when.
    with pytest.raises(AuthenticationFailed) as info:
        login(d, "n1", T0 + 600)
    assert info.value.reason == "locked until 2025-03-01T08:45:04Z"
    assert info.value.locked_until == T0 + 904
    # Attempts while locked neither extend nor reset the lock, nor count.
    for t in (T0 + 700, T0 + 903):
        fail(d, "n1", "B-3", "0000", t)
    assert d.lock_state("n1") == LockState(5, T0 + 904)
    assert d.is_locked("n1", T0 + 903.9)
    assert not d.is_locked("n1", T0 + 904)
    assert login(d, "n1", T0 + 904).staff_id == "n1"
    assert d.lock_state("n1") == LockState()
    locked_refusals = [a for a in d.attempts if a.reason.startswith("locked until")]
    assert len(locked_refusals) == 3


def test_after_a_lock_runs_out_the_next_wrong_pin_locks_again_at_once() -> None:
    d = directory(max_failures=3, lockout_s=60.0)
    for i in range(3):
        fail(d, "n1", "B-3", "0000", T0 + i)
    assert not d.is_locked("n1", T0 + 62)
    assert "locked until" in fail(d, "n1", "B-3", "0000", T0 + 70)
    assert d.lock_state("n1") == LockState(4, T0 + 130)


def test_a_success_resets_the_count() -> None:
    d = directory(max_failures=5)
    for i in range(4):
        fail(d, "n1", "B-3", "0000", T0 + i)
    login(d, "n1", T0 + 10)
    for i in range(4):
        fail(d, "n1", "B-3", "0000", T0 + 20 + i)
    assert not d.is_locked("n1", T0 + 30)
    assert d.lock_state("n1").failures == 4


def lock(d: StaffDirectory, staff_id: str, now: float) -> None:
    for i in range(d.max_failures):
        fail(d, staff_id, "B-0", "0000", now + i)
    assert d.is_locked(staff_id, now + d.max_failures)


def test_a_pharmacist_unlocks_someone_elses_credential() -> None:
    d = directory()
    lock(d, "n1", T0)
    by = login(d, "ph1", T0 + 30)
    d.unlock("n1", by, T0 + 40)
    assert d.lock_state("n1") == LockState()
    assert login(d, "n1", T0 + 50).staff_id == "n1"
    unlocks = [a for a in d.attempts if a.kind is AttemptKind.UNLOCK]
    assert [(a.staff_id, a.ok, a.reason) for a in unlocks] == [("n1", True, "unlocked by ph1")]


def test_unlock_needs_a_fresh_pharmacist_who_is_someone_else() -> None:
    d = directory()
    lock(d, "ph2", T0)
    with pytest.raises(PermissionDenied, match=r"Zhang Min \(n1; roles: or_nurse\)"):
        d.unlock("ph2", login(d, "n1", T0 + 10), T0 + 10)
    stale = login(d, "ph1", T0 + 10)
    with pytest.raises(AuthenticationFailed, match="s old"):
        d.unlock("ph2", stale, T0 + 10 + 121)
    # A pharmacist who authenticated and then locked themselves out cannot unlock themselves.
    own = login(d, "ph1", T0 + 200)
    lock(d, "ph1", T0 + 201)
    with pytest.raises(PermissionDenied, match="their own credential"):
        d.unlock("ph1", own, T0 + 210)
    with pytest.raises(NotFound):
        d.unlock("nobody", login(d, "ph2", T0 + 2000), T0 + 2000)
    assert d.is_locked("ph1", T0 + 210)


def test_an_inactive_person_may_not_authenticate_and_their_authentication_lapses() -> None:
    d = directory()
    earlier = login(d, "n1", T0)
    d.update(dataclasses.replace(NURSE, active=False))
    with pytest.raises(AuthenticationFailed) as info:
        login(d, "n1", T0 + 1)
    assert info.value.reason == INACTIVE
    assert "inactive" in info.value.reason
    with pytest.raises(AuthenticationFailed, match="inactive"):
        d.check_authentication(earlier, T0 + 2)
    # Refused without looking at the factors: not counted towards a lock.
    assert d.lock_state("n1").failures == 0


def test_badge_first_flow() -> None:
    d = directory()
    assert d.find_by_badge("B-2") == PHARMACIST_2
    assert d.find_by_badge("B-404") is None
    assert d.authenticate_badge("B-2", "4826", T0).staff_id == "ph2"
    with pytest.raises(AuthenticationFailed) as info:
        d.authenticate_badge("B-404", "4826", T0 + 1)
    assert info.value.reason == NOT_ACCEPTED
    assert d.attempts[-1].staff_id == ""
    with pytest.raises(AuthenticationFailed) as info:
        d.authenticate_badge("B-2", "4827", T0 + 2)
    assert info.value.reason == NOT_ACCEPTED
    assert d.lock_state("ph2").failures == 1


def test_only_fresh_authentications_issued_by_the_directory_are_accepted() -> None:
    d = directory()
    auth = login(d, "ph1", T0)
    assert d.check_authentication(auth, T0 + 120) == PHARMACIST
    with pytest.raises(AuthenticationFailed, match="121 s old"):
        d.check_authentication(auth, T0 + 121)
    assert d.check_authentication(auth, T0 + 500, max_age_s=600) == PHARMACIST
    with pytest.raises(AuthenticationFailed, match="dated after now"):
        d.check_authentication(auth, T0 - 1)
    forged = [
        Authentication("ph1", (AuthFactor.BADGE, AuthFactor.PIN), T0),
        dataclasses.replace(auth, at=T0 + 60),  # moved in time
        dataclasses.replace(auth, staff_id="ph2"),  # someone else's name on it
        dataclasses.replace(auth, factors=(AuthFactor.BADGE,)),
        login(directory(), "ph1", T0),  # another directory (another process) issued it
    ]
    for bad in forged:
        with pytest.raises(AuthenticationFailed, match="not issued"):
            d.check_authentication(bad, T0 + 61)


def test_bad_now_is_refused() -> None:
    d = directory()
    with pytest.raises(InvalidArgument) as info:
        login(d, "n1", float("nan"))
    assert info.value.field == "now"
    assert d.attempts == ()


# -- PIN storage and rules -----------------------------------------------------------------------


def _everything(obj: object, seen: set[int] | None = None) -> Iterator[object]:
    """Every object reachable from `obj` through attributes, slots and containers."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    yield obj
    if isinstance(obj, str | bytes | int | float | bool | type(None)):
        return
    if isinstance(obj, dict):
        children: list[object] = [*obj.keys(), *obj.values()]
    elif isinstance(obj, list | tuple | set | frozenset):
        children = list(obj)
    elif dataclasses.is_dataclass(obj):
        children = [getattr(obj, f.name) for f in dataclasses.fields(obj)]
    elif hasattr(obj, "__dict__"):
        children = list(vars(obj).values())
    else:
        children = []
    for child in children:
        yield from _everything(child, seen)


def test_pins_are_kept_only_as_salted_slow_hashes() -> None:
    d = StaffDirectory()  # the production hashing: scrypt, N=2**14, r=8, p=1
    d.add(NURSE, "B-3", "9417")
    d.add(PHARMACIST, "B-1", "9417")  # the same PIN for two people
    login(d, "n1", T0)
    fail(d, "n1", "B-3", "7149", T0 + 1)
    values = list(_everything(d))
    for pin in ("9417", "7149"):
        assert not any(isinstance(v, str) and pin in v for v in values)
        assert not any(isinstance(v, bytes) and pin.encode() in v for v in values)
    a, b = d.credential("n1").pin_hash, d.credential("ph1").pin_hash
    assert (a.scheme, a.cost, len(a.salt), len(a.digest)) == ("scrypt", (2**14, 8, 1), 16, 32)
    assert a.salt != b.salt and a.digest != b.digest  # salted: same PIN, different hashes
    assert "digest" not in repr(d.credential("n1")) and "salt" not in repr(a)


def test_pin_hash_encoding_round_trip_and_pbkdf2() -> None:
    for hashing in (FAST, PinHashing(scheme=PBKDF2, cost=(1000,))):
        h = hashing.hash("0642")
        again = PinHash.decode(h.encode())
        assert again == h and again.matches("0642") and not again.matches("0643")
    for bad in ("", "scrypt$1$2$3", "md5$x$y", "scrypt$16$1$1$!!$!!"):
        with pytest.raises(InvalidArgument):
            PinHash.decode(bad)


@pytest.mark.parametrize(
    ("pin", "why"),
    [
        ("258", "4 to 8 digits"),
        ("258014703", "4 to 8 digits"),
        ("25a0", "4 to 8 digits"),
        ("２５８０", "4 to 8 digits"),  # full-width digits are not 0-9
        (" 2580", "4 to 8 digits"),
        ("7777", "one digit repeated"),
        ("1234", "run"),
        ("87654", "run"),
    ],
)
def test_pin_rules(pin: str, why: str) -> None:
    d = StaffDirectory(hashing=FAST)
    with pytest.raises(InvalidArgument) as info:
        d.add(NURSE, "B-3", pin)
    assert info.value.field == "pin"
    assert why in info.value.reason
    assert pin not in str(info.value)
    assert len(d) == 0


def test_taken_ids_and_badges_are_refused_and_change_nothing() -> None:
    d = directory()
    with pytest.raises(InvalidArgument) as info:
        d.add(dataclasses.replace(NURSE, name="Other"), "B-77", "3058")
    assert info.value.field == "id"
    with pytest.raises(InvalidArgument) as info:
        d.add(StaffMember("n2", "Anna", frozenset({Role.OR_NURSE})), "B-3", "3058")
    assert info.value.field == "badge"
    assert len(d) == 3 and "n2" not in d and d.get("n1").name == "Zhang Min"


def test_staff_member_validation() -> None:
    with pytest.raises(InvalidArgument, match="roles"):
        StaffMember("x1", "X", frozenset())
    with pytest.raises(InvalidArgument, match="unknown role 'surgeon'"):
        StaffMember("x1", "X", frozenset({"surgeon"}))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="id"):
        StaffMember("has space", "X", frozenset({Role.AUDITOR}))
    member = StaffMember("x1", "X", frozenset({"auditor"}))  # type: ignore[arg-type]
    assert member.roles == frozenset({Role.AUDITOR}) and member.ref == "person:x1"


def test_restore_puts_back_credential_and_lock() -> None:
    d = directory(max_failures=2)
    lock(d, "n1", T0)
    again = StaffDirectory(hashing=FAST, max_failures=2)
    again.restore(NURSE, d.credential("n1"), d.lock_state("n1"))
    assert again.is_locked("n1", T0 + 10)
    assert login(again, "n1", T0 + 2000).staff_id == "n1"


def test_take_attempts_hands_over_the_audit() -> None:
    d = directory()
    login(d, "n1")
    fail(d, "n1", "B-3", "0000", T0 + 1)
    taken = d.take_attempts()
    assert [a.ok for a in taken] == [True, False]
    assert d.attempts == ()


# -- property: the lock ---------------------------------------------------------------------------

LOCKOUT_S = 300.0
events = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=200.0, allow_nan=False),
        st.sampled_from(["right", "wrong_pin", "wrong_badge", "unlock"]),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(max_failures=st.integers(min_value=1, max_value=5), steps=events)
def test_locked_exactly_when_the_last_max_failures_attempts_were_wrong(
    max_failures: int, steps: list[tuple[float, str]]
) -> None:
    """Model: `since` holds the attempts (time, ok) since the last success or unlock that were
    looked at (attempts while locked are refused unread and do not count). The credential is
    locked at t exactly when the last `max_failures` of them are all wrong and the last one
    is less than `lockout_s` before t."""
    d = directory(max_failures=max_failures, lockout_s=LOCKOUT_S)
    since: list[tuple[float, bool]] = []

    def model_locked(t: float) -> bool:
        last = since[-max_failures:]
        return (
            len(last) == max_failures
            and not any(ok for _, ok in last)
            and t < last[-1][0] + LOCKOUT_S
        )

    t = T0
    for dt, kind in steps:
        t += dt
        assert d.is_locked("n1", t) == model_locked(t)
        if kind == "unlock":
            d.unlock("n1", login(d, "ph1", t), t)
            since = []
        elif model_locked(t):
            before = d.lock_state("n1")
            badge, pin = ("B-3", "9417") if kind == "right" else ("B-3", "0000")
            assert fail(d, "n1", badge, pin, t).startswith("locked until")
            assert d.lock_state("n1") == before
        elif kind == "right":
            assert login(d, "n1", t).staff_id == "n1"
            since = []
        else:
            badge, pin = ("B-3", "9418") if kind == "wrong_pin" else ("B-1", "9417")
            reason = fail(d, "n1", badge, pin, t)
            since.append((t, False))
            assert reason.startswith(NOT_ACCEPTED)
            assert ("locked until" in reason) == model_locked(t)
        assert d.is_locked("n1", t) == model_locked(t)
        assert d.is_locked("n1", t + LOCKOUT_S) is False


# -- the staff file ------------------------------------------------------------------------------


def test_demo_staff_file_loads_and_every_demo_pin_works() -> None:
    d = load_staff(STAFF_FILE, StaffDirectory(hashing=FAST))
    counts = {role: sum(role in m.roles for m in d) for role in Role}
    assert counts == {
        Role.PHARMACIST: 3,
        Role.ANESTHESIOLOGIST: 2,
        Role.OR_NURSE: 3,
        Role.LOGISTICS: 1,
        Role.AUDITOR: 1,
    }
    raw = yaml.safe_load(STAFF_FILE.read_text(encoding="utf-8"))
    for i, person in enumerate(raw["staff"]):
        auth = d.authenticate(person["id"], person["badge"], person["pin"], T0 + i)
        assert auth.staff_id == person["id"]
    assert "TEST DATA" in STAFF_FILE.read_text(encoding="utf-8")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "staff.yaml"
    path.write_text(text, encoding="utf-8")
    return path


GOOD = """\
staff:
  - {id: ph1, name: Chen, roles: [pharmacist], department: pharmacy, badge: B-1, pin: "2580"}
"""


def issues_of(path: Path, d: StaffDirectory | None = None) -> list[str]:
    with pytest.raises(StaffFileError) as info:
        load_staff(path, d or StaffDirectory(hashing=FAST))
    assert all(i.file == str(path) for i in info.value.issues)
    return [f"{i.path}: {i.message}" for i in info.value.issues]


def test_staff_file_errors_name_the_path_and_never_echo_a_pin(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
staff:
  - {id: ph1, name: Chen, roles: [pharmacist], badge: B-1, pin: 4826}
  - {id: ph1, name: Okafor, roles: [pharmacist, surgeon], badge: B-1, pin: "7391"}
  - {id: n1, name: Zhang, roles: [or_nurse], badge: B-3, pin: "1111", extra: 1}
  - {id: n2, name: Patel, roles: or_nurse, bagde: B-4, pin: "6239", active: "yes"}
  - just text
""",
    )
    found = issues_of(path)
    assert found == [
        'staff[0].pin: must be text in quotes, e.g. pin: "2580"',
        "staff[1].roles[1]: unknown role text 'surgeon'; known: pharmacist, anesthesiologist, "
        "or_nurse, logistics, auditor",
        "staff[2].extra: unknown key; known: id, name, roles, department, badge, pin, active",
        "staff[2].pin: must not be one digit repeated",
        "staff[3].bagde: unknown key (did you mean 'badge'?); known: id, name, roles, "
        "department, badge, pin, active",
        "staff[3].badge: missing",
        "staff[3].active: must be true or false, not text 'yes'",
        "staff[3].roles: must be a non-empty list, not text 'or_nurse'",
        "staff[4]: must be a mapping describing a person, not text 'just text'",
    ]
    assert not any(pin in line for line in found for pin in ("4826", "1111"))


def test_staff_file_duplicates_and_all_or_nothing(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        GOOD
        + """\
  - {id: ph2, name: Okafor, roles: [pharmacist], badge: B-1, pin: "7391"}
  - {id: ph1, name: Chen again, roles: [pharmacist], badge: B-9, pin: "7391"}
""",
    )
    d = StaffDirectory(hashing=FAST)
    assert issues_of(path, d) == [
        "staff[1].badge: badge 'B-1' is also given at staff[0].badge",
        "staff[2].id: id 'ph1' is also given at staff[0].id",
    ]
    assert len(d) == 0
    d.add(StaffMember("ph1", "Chen", frozenset({Role.PHARMACIST})), "B-7", "2580")
    assert issues_of(write(tmp_path, GOOD), d) == [
        "staff[0].id: id 'ph1' is already in the staff directory"
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("staff: [\n", "YAML error at line 2"),
        ("staff:\n  - id: a\n    id: b\n", "key 'id' given twice (first on line 2)"),
        ("- a\n", "must be a mapping with `staff:`, not a list"),
        ("staff: []\n", "must be a non-empty list"),
        ("stuff: []\n", "unknown key (did you mean 'staff'?)"),
    ],
)
def test_staff_file_shape_errors(tmp_path: Path, text: str, message: str) -> None:
    assert any(message in line for line in issues_of(write(tmp_path, text)))


def test_missing_staff_file(tmp_path: Path) -> None:
    assert issues_of(tmp_path / "none.yaml") == ["<root>: file not found"]
