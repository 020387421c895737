"""People and authentication for custody steps: staff, roles, badge + PIN credentials, lockout.

Pure (DESIGN.md principle 1): no gRPC, database or web imports, and no clock of its own: every
call that depends on time takes `now` (seconds since the epoch). The store persists what this
module hands it (`Credential`, `LockState`, `AuthAttempt`) and rebuilds a directory with
`StaffDirectory.restore`.

Two factors
-----------
A custody change of a controlled drug needs two factors (hospital-domain.md 1.1, 1.4): something
the person has (the badge) and something they know (the PIN). `StaffDirectory.authenticate`
checks both and returns an `Authentication` for that one step; custody steps refuse an
authentication older than a freshness window (`DEFAULT_FRESHNESS_S`, 120 s), like a dispensing
cabinet's log-in per transaction (1.3): factors entered for this step, not a session from this
morning. An `Authentication` carries a tag (HMAC with a key only the directory holds), so code
cannot make one up: `StaffDirectory.check_authentication` refuses any it did not issue.

PIN storage
-----------
A PIN is never kept in clear: only a salted slow hash (`PinHash`). The default is scrypt with
N = 2**14, r = 8, p = 1 (16 MiB of memory, some tens of milliseconds per hash), a 16-byte random
salt per credential and a 32-byte result; where the Python build lacks scrypt, PBKDF2-HMAC-SHA256
with 600,000 iterations (OWASP's 2023 figure). The scheme and its cost travel with each hash,
so stronger settings apply to new PINs without breaking old ones. Comparisons use
`hmac.compare_digest`.

A PIN has at most 10**8 values, so no hash makes a stolen hash safe from offline guessing: the
hash keeps PINs from being read off the store or a backup and makes bulk guessing costly. The
real protection is the second factor (the badge), the lockout below, and who may read the store.

Lockout
-------
Every wrong badge-or-PIN for a staff id counts; after `max_failures` (default 5) wrong attempts
in a row the credential locks for `lockout_s` (default 15 min), or until a pharmacist unlocks it
(`unlock`). A success or an unlock clears the count. Attempts while locked are refused without
looking at the PIN, so they tell a guesser nothing; they do not extend or shorten the lock, and
they do not count. When a lock runs out the count is *not* cleared: the next wrong attempt locks
again at once, so a guesser gets one try per lockout period instead of five. Every attempt
(also refused ones and unlocks) is appended to `attempts` for the caller to persist
(21 CFR 1311.150 asks for attempted unauthorized access in the audit trail).

What a failure says
-------------------
`AuthenticationFailed.reason` never says which factor was wrong (`NOT_ACCEPTED` for a wrong badge,
a wrong PIN, both, or an unknown staff id); it does say "locked until ..." for a locked
credential and "inactive" for a person who may no longer authenticate. An unknown staff id or
badge still costs one PIN hash, so timing does not tell them apart either.

Demo staff
----------
`load_staff` reads a staff file (`simulators/data/staff.yaml`): a mapping with `staff:`, a list
of people with `id`, `name`, `roles`, `department`, `badge`, `pin` (quoted text) and optional
`active`. Every problem is reported with the file, the path inside it and what is wrong; a PIN
is never echoed.
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import hmac
import itertools
import math
import re
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, NoReturn

import yaml

from fleet.building.loader import ROOT, describe_value, join_path, yaml_error_at
from fleet.custody.ledger import AuthFactor
from fleet.domain.errors import DomainError, InvalidArgument, NotFound, PermissionDenied

DEFAULT_MAX_FAILURES = 5
DEFAULT_LOCKOUT_S = 15 * 60.0
DEFAULT_FRESHNESS_S = 120.0

# What a wrong badge, a wrong PIN, both, or an unknown staff id or badge all say.
NOT_ACCEPTED = "badge or PIN not accepted"
INACTIVE = "inactive: this person may no longer authenticate"

TWO_FACTORS: tuple[AuthFactor, ...] = (AuthFactor.BADGE, AuthFactor.PIN)

_PIN = re.compile(r"[0-9]{4,8}")
_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_BADGE = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class Role(StrEnum):
    """What a person does in the hospital; `fleet.custody.permissions` maps roles to actions."""

    PHARMACIST = "pharmacist"
    ANESTHESIOLOGIST = "anesthesiologist"
    OR_NURSE = "or_nurse"
    LOGISTICS = "logistics"
    AUDITOR = "auditor"


# Who may unlock someone else's locked credential (a pharmacist, as for other custody overrides).
UNLOCK_ROLES = frozenset({Role.PHARMACIST})


class AuthenticationFailed(DomainError):
    """Factors not accepted, a locked credential, an inactive person, or an authentication that
    is stale or was not issued by the directory. Maps to UNAUTHENTICATED at the edge.

    `reason` is safe to show the person at the device: it never says which factor was wrong.
    `locked_until` is set when the credential is (now) locked.
    """

    def __init__(self, staff_id: str, reason: str, locked_until: float | None = None) -> None:
        super().__init__(f"authentication of {staff_id!r} failed: {reason}")
        self.staff_id = staff_id
        self.reason = reason
        self.locked_until = locked_until


# -- staff ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StaffMember:
    """A person who may take part in custody steps. `roles` decide what they may do; an
    inactive person (left, suspended) keeps their record, for the ledger names them, but may
    neither authenticate nor act."""

    id: str
    name: str
    roles: frozenset[Role]
    department: str = ""
    active: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not _ID.fullmatch(self.id):
            raise InvalidArgument("id", "must be 1 to 64 letters, digits, '.', '_' or '-'")
        if not isinstance(self.name, str) or not self.name.strip():
            raise InvalidArgument("name", "must not be empty")
        if not isinstance(self.department, str):
            raise InvalidArgument("department", "must be text")
        if not isinstance(self.active, bool):
            raise InvalidArgument("active", "must be true or false")
        roles: set[Role] = set()
        for role in self.roles:
            try:
                roles.add(Role(role))
            except ValueError:
                known = ", ".join(r.value for r in Role)
                raise InvalidArgument("roles", f"unknown role {role!r} (known: {known})") from None
        if not roles:
            raise InvalidArgument("roles", "at least one role is needed")
        # Accept plain role names too, but always hold a frozenset of Role.
        object.__setattr__(self, "roles", frozenset(roles))

    @property
    def ref(self) -> str:
        """The person as a custodian or actor in the ledger: `person:<id>`."""
        return f"person:{self.id}"

    def describe(self) -> str:
        """`Name (id; roles: a, b)` for error messages."""
        roles = ", ".join(sorted(r.value for r in self.roles))
        return f"{self.name} ({self.id}; roles: {roles})"


def check_pin(pin: str) -> None:
    """Refuse a PIN that is not 4 to 8 digits, or that is trivially guessed (one digit repeated,
    or a straight run such as 1234 or 8765). The message never repeats the PIN."""
    if not isinstance(pin, str) or not _PIN.fullmatch(pin):
        raise InvalidArgument("pin", "must be 4 to 8 digits (0-9)")
    if len(set(pin)) == 1:
        raise InvalidArgument("pin", "must not be one digit repeated")
    steps = {int(b) - int(a) for a, b in itertools.pairwise(pin)}
    if steps in ({1}, {-1}):
        raise InvalidArgument("pin", "must not be a run of consecutive digits")


def check_badge(badge: str) -> None:
    """Refuse a badge id that is not 1 to 64 letters, digits, '.', '_', ':' or '-'."""
    if not isinstance(badge, str) or not _BADGE.fullmatch(badge):
        raise InvalidArgument("badge", "must be 1 to 64 letters, digits, '.', '_', ':' or '-'")


# -- PIN hashing ---------------------------------------------------------------------------------


SCRYPT = "scrypt"
PBKDF2 = "pbkdf2-sha256"


def _derive(scheme: str, cost: tuple[int, ...], secret: bytes, salt: bytes, dklen: int) -> bytes:
    if scheme == SCRYPT:
        n, r, p = cost
        # OpenSSL's default memory cap (32 MiB) is too tight for some settings: allow what
        # scrypt needs (128 * r * (n + p + 2) bytes) plus room for its bookkeeping.
        maxmem = 128 * r * (n + p + 2) + (1 << 20)
        return hashlib.scrypt(secret, salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=maxmem)
    if scheme == PBKDF2:
        (iterations,) = cost
        return hashlib.pbkdf2_hmac("sha256", secret, salt, iterations, dklen)
    raise InvalidArgument("scheme", f"unknown PIN hash scheme {scheme!r}")


def _check_cost(scheme: str, cost: tuple[int, ...]) -> None:
    if scheme == SCRYPT:
        if len(cost) != 3 or any(not isinstance(c, int) or c < 1 for c in cost):
            raise InvalidArgument("cost", "scrypt needs (n, r, p), positive integers")
        n = cost[0]
        if n < 2 or n & (n - 1):
            raise InvalidArgument("cost", "scrypt's n must be a power of two, at least 2")
    elif scheme == PBKDF2:
        if len(cost) != 1 or not isinstance(cost[0], int) or cost[0] < 1:
            raise InvalidArgument("cost", "pbkdf2 needs (iterations,), a positive integer")
    else:
        raise InvalidArgument("scheme", f"unknown PIN hash scheme {scheme!r}")


@dataclass(frozen=True, slots=True)
class PinHash:
    """A salted slow hash of a PIN, with the scheme and cost that made it (so a verifier needs
    nothing else). `encode()` gives one line of text for the store:
    `scrypt$16384$8$1$<salt, base64>$<hash, base64>` or `pbkdf2-sha256$600000$<salt>$<hash>`."""

    scheme: str
    cost: tuple[int, ...]
    salt: bytes = field(repr=False)
    digest: bytes = field(repr=False)

    def __post_init__(self) -> None:
        _check_cost(self.scheme, self.cost)
        if len(self.salt) < 8 or len(self.digest) < 16:
            raise InvalidArgument("pin_hash", "salt or hash too short")

    def matches(self, pin: str) -> bool:
        """Whether `pin` is the PIN this hash was made from (constant-time comparison)."""
        candidate = _derive(self.scheme, self.cost, pin.encode(), self.salt, len(self.digest))
        return hmac.compare_digest(candidate, self.digest)

    def encode(self) -> str:
        """The hash as one line of text (see the class docstring)."""
        salt = base64.b64encode(self.salt).decode()
        digest = base64.b64encode(self.digest).decode()
        return "$".join([self.scheme, *map(str, self.cost), salt, digest])

    @classmethod
    def decode(cls, text: str) -> PinHash:
        """Parse `encode()`'s text; InvalidArgument (`pin_hash`) for anything else."""
        parts = text.split("$")
        sizes = {SCRYPT: 6, PBKDF2: 4}
        if not parts or sizes.get(parts[0]) != len(parts):
            raise InvalidArgument("pin_hash", "not an encoded PIN hash")
        try:
            cost = tuple(int(c) for c in parts[1:-2])
            salt = base64.b64decode(parts[-2], validate=True)
            digest = base64.b64decode(parts[-1], validate=True)
        except ValueError:
            raise InvalidArgument("pin_hash", "not an encoded PIN hash") from None
        return cls(parts[0], cost, salt, digest)


@dataclass(frozen=True, slots=True)
class PinHashing:
    """How new PINs are hashed: the scheme, its cost, the salt and hash sizes.

    The defaults (`DEFAULT_HASHING`) are for service use; tests pass a cheap cost such as
    `PinHashing(cost=(16, 1, 1))` so that thousands of attempts run in a second.
    """

    scheme: str = SCRYPT
    cost: tuple[int, ...] = (2**14, 8, 1)
    salt_bytes: int = 16
    dklen: int = 32

    def __post_init__(self) -> None:
        _check_cost(self.scheme, self.cost)
        if self.salt_bytes < 16 or self.dklen < 16:
            raise InvalidArgument("hashing", "salt and hash need at least 16 bytes each")

    def hash(self, pin: str) -> PinHash:
        """A new salted hash of `pin` (which the caller has checked with `check_pin`)."""
        salt = secrets.token_bytes(self.salt_bytes)
        return PinHash(self.scheme, self.cost, salt, self._derive(pin, salt))

    def _derive(self, pin: str, salt: bytes) -> bytes:
        return _derive(self.scheme, self.cost, pin.encode(), salt, self.dklen)


DEFAULT_HASHING = (
    PinHashing() if hasattr(hashlib, "scrypt") else PinHashing(scheme=PBKDF2, cost=(600_000,))
)


# -- credentials, lock state, audit --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Credential:
    """One person's factors: the badge id (not secret: a reader reads it) and the PIN's hash."""

    staff_id: str
    badge: str
    pin_hash: PinHash


@dataclass(frozen=True, slots=True)
class LockState:
    """Wrong attempts in a row since the last success or unlock, and the end of the lock (None:
    never locked since). Locked at `now` exactly when `locked_until` is after `now`."""

    failures: int = 0
    locked_until: float | None = None

    def is_locked(self, now: float) -> bool:
        """Whether the credential is locked at `now`."""
        return self.locked_until is not None and now < self.locked_until


class AttemptKind(StrEnum):
    """What an audit entry records."""

    AUTHENTICATE = "authenticate"
    UNLOCK = "unlock"


@dataclass(frozen=True, slots=True)
class AuthAttempt:
    """One entry of the authentication audit: when, for whom (the staff id given, which may be
    unknown), whether it succeeded, and the reason shown. Never holds a PIN."""

    at: float
    staff_id: str
    ok: bool
    reason: str
    kind: AttemptKind = AttemptKind.AUTHENTICATE


@dataclass(frozen=True, slots=True)
class Authentication:
    """Proof that `staff_id` presented `factors` at `at`, issued by one `StaffDirectory`.

    `tag` binds the fields to the directory's key: custody steps accept only authentications
    `StaffDirectory.check_authentication` recognises, and only while fresh.
    """

    staff_id: str
    factors: tuple[AuthFactor, ...]
    at: float
    tag: bytes = field(default=b"", repr=False)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_now(now: float) -> None:
    if isinstance(now, bool) or not isinstance(now, int | float) or not math.isfinite(now):
        raise InvalidArgument("now", "must be a finite number of seconds since the epoch")


# -- the directory -------------------------------------------------------------------------------


class StaffDirectory:
    """The people, their credentials and lock states, and the authentication audit.

    Not thread-safe: like the rest of the core it is changed by one writer at a time.
    """

    def __init__(
        self,
        *,
        max_failures: int = DEFAULT_MAX_FAILURES,
        lockout_s: float = DEFAULT_LOCKOUT_S,
        freshness_s: float = DEFAULT_FRESHNESS_S,
        hashing: PinHashing = DEFAULT_HASHING,
    ) -> None:
        if isinstance(max_failures, bool) or not isinstance(max_failures, int) or max_failures < 1:
            raise InvalidArgument("max_failures", "must be a positive integer")
        for name, value in (("lockout_s", lockout_s), ("freshness_s", freshness_s)):
            if not math.isfinite(value) or value <= 0:
                raise InvalidArgument(name, "must be a positive number of seconds")
        self.max_failures = max_failures
        self.lockout_s = float(lockout_s)
        self.freshness_s = float(freshness_s)
        self.hashing = hashing
        self._members: dict[str, StaffMember] = {}
        self._credentials: dict[str, Credential] = {}
        self._by_badge: dict[str, str] = {}
        self._locks: dict[str, LockState] = {}
        self._attempts: list[AuthAttempt] = []
        # Signs issued authentications; new at every start, so authentications (which live for
        # seconds) never outlive the process that issued them.
        self._key = secrets.token_bytes(32)
        self._dummy: PinHash | None = None

    # -- people ----------------------------------------------------------------------------------

    def add(self, member: StaffMember, badge: str, pin: str) -> None:
        """Add a person with their badge and PIN (hashed here; the PIN is not kept).

        InvalidArgument (`id`, `badge`, `pin`) for a taken id or badge or a PIN breaking the
        rules of `check_pin`; nothing changes then.
        """
        check_pin(pin)
        self._check_new(member, badge)
        self._insert(member, Credential(member.id, badge, self.hashing.hash(pin)), LockState())

    def restore(
        self, member: StaffMember, credential: Credential, lock: LockState | None = None
    ) -> None:
        """Put back a person as the store kept them (hash and lock state, no PIN)."""
        if credential.staff_id != member.id:
            raise InvalidArgument("credential", "belongs to another staff id")
        self._check_new(member, credential.badge)
        self._insert(member, credential, LockState() if lock is None else lock)

    def update(self, member: StaffMember) -> None:
        """Replace a person's record (roles, department, active); their credential stays."""
        self.get(member.id)
        self._members[member.id] = member

    def get(self, staff_id: str) -> StaffMember:
        """The person with `staff_id`; NotFound if there is none."""
        try:
            return self._members[staff_id]
        except KeyError:
            raise NotFound(f"no staff member {staff_id!r}") from None

    def find_by_badge(self, badge: str) -> StaffMember | None:
        """The person a badge belongs to (badge-first flows: swipe, then PIN), or None."""
        staff_id = self._by_badge.get(badge)
        return None if staff_id is None else self._members[staff_id]

    def credential(self, staff_id: str) -> Credential:
        """A person's credential as the store should keep it (badge and PIN hash)."""
        self.get(staff_id)
        return self._credentials[staff_id]

    def lock_state(self, staff_id: str) -> LockState:
        """A person's wrong-attempt count and lock end, as the store should keep them."""
        self.get(staff_id)
        return self._locks[staff_id]

    def is_locked(self, staff_id: str, now: float) -> bool:
        """Whether `staff_id`'s credential is locked at `now`."""
        return self.lock_state(staff_id).is_locked(now)

    def __iter__(self) -> Iterator[StaffMember]:
        return iter(self._members.values())

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, staff_id: object) -> bool:
        return staff_id in self._members

    def _check_new(self, member: StaffMember, badge: str) -> None:
        check_badge(badge)
        if member.id in self._members:
            raise InvalidArgument("id", f"staff id {member.id!r} is taken")
        if badge in self._by_badge:
            raise InvalidArgument("badge", f"badge {badge!r} belongs to someone else")

    def _insert(self, member: StaffMember, credential: Credential, lock: LockState) -> None:
        self._members[member.id] = member
        self._credentials[member.id] = credential
        self._by_badge[credential.badge] = member.id
        self._locks[member.id] = lock

    # -- authentication --------------------------------------------------------------------------

    def authenticate(self, staff_id: str, badge: str, pin: str, now: float) -> Authentication:
        """Check `staff_id`'s badge and PIN at `now`; an `Authentication` for one custody step.

        Raises AuthenticationFailed (see the module docstring for what its reason says), and
        counts wrong attempts towards the lockout. Every call adds one entry to `attempts`.
        """
        _check_now(now)
        credential = self._credentials.get(staff_id)
        if credential is None:
            self._burn_one_hash(pin)
            self._refuse(now, staff_id, NOT_ACCEPTED)
        if not self._members[staff_id].active:
            self._refuse(now, staff_id, INACTIVE)
        lock = self._locks[staff_id]
        if lock.is_locked(now):
            assert lock.locked_until is not None
            self._refuse(
                now, staff_id, f"locked until {_iso(lock.locked_until)}", lock.locked_until
            )
        # Both factors are always checked (no short cut), so the time taken does not tell
        # a wrong badge from a wrong PIN.
        badge_ok = hmac.compare_digest(credential.badge.encode(), badge.encode())
        pin_ok = credential.pin_hash.matches(pin)
        if badge_ok and pin_ok:
            self._locks[staff_id] = LockState()
            self._attempts.append(AuthAttempt(now, staff_id, True, "accepted"))
            return self._issue(staff_id, now)
        failures = lock.failures + 1
        if failures >= self.max_failures:
            until = now + self.lockout_s
            self._locks[staff_id] = LockState(failures, until)
            reason = f"{NOT_ACCEPTED}; too many failed attempts: locked until {_iso(until)}"
            self._refuse(now, staff_id, reason, until)
        self._locks[staff_id] = LockState(failures, lock.locked_until)
        self._refuse(now, staff_id, NOT_ACCEPTED)

    def authenticate_badge(self, badge: str, pin: str, now: float) -> Authentication:
        """Badge-first authentication (swipe, then PIN): whoever the badge belongs to.

        An unknown badge fails like a wrong PIN (recorded with an empty staff id).
        """
        member = self.find_by_badge(badge)
        if member is None:
            _check_now(now)
            self._burn_one_hash(pin)
            self._refuse(now, "", NOT_ACCEPTED)
        return self.authenticate(member.id, badge, pin, now)

    def check_authentication(
        self, auth: Authentication, now: float, *, max_age_s: float | None = None
    ) -> StaffMember:
        """The person behind `auth`, if this directory issued it, it is at most `max_age_s`
        (default `freshness_s`) old at `now`, and the person is still active.

        AuthenticationFailed otherwise: a custody step needs factors entered for that step.
        """
        _check_now(now)
        window = self.freshness_s if max_age_s is None else max_age_s
        if not math.isfinite(window) or window <= 0:
            raise InvalidArgument("max_age_s", "must be a positive number of seconds")
        expected = self._tag(auth.staff_id, auth.factors, auth.at)
        if not hmac.compare_digest(expected, auth.tag) or auth.staff_id not in self._members:
            raise AuthenticationFailed(
                auth.staff_id, "this authentication was not issued by the staff directory"
            )
        age = now - auth.at
        if age < 0:
            raise AuthenticationFailed(auth.staff_id, "authentication is dated after now")
        if age > window:
            raise AuthenticationFailed(
                auth.staff_id,
                f"authentication is {age:.0f} s old; a custody step needs badge and PIN "
                f"entered for it (at most {window:g} s before)",
            )
        member = self._members[auth.staff_id]
        if not member.active:
            raise AuthenticationFailed(auth.staff_id, INACTIVE)
        return member

    def unlock(self, staff_id: str, by: Authentication, now: float) -> None:
        """Clear `staff_id`'s lock and wrong-attempt count, on a pharmacist's fresh
        authentication (`by`). Nobody unlocks their own credential.

        AuthenticationFailed for a stale or unknown `by`; PermissionDenied if `by` is not a
        pharmacist or is the same person; NotFound for an unknown `staff_id`.
        """
        unlocker = self.check_authentication(by, now)
        self.get(staff_id)
        if not unlocker.roles & UNLOCK_ROLES:
            raise PermissionDenied(
                f"{unlocker.describe()} may not unlock credentials (pharmacists only)"
            )
        if unlocker.id == staff_id:
            raise PermissionDenied(f"{unlocker.describe()} may not unlock their own credential")
        self._locks[staff_id] = LockState()
        self._attempts.append(
            AuthAttempt(now, staff_id, True, f"unlocked by {unlocker.id}", AttemptKind.UNLOCK)
        )

    # -- audit -----------------------------------------------------------------------------------

    @property
    def attempts(self) -> tuple[AuthAttempt, ...]:
        """Every authentication attempt and unlock not yet taken by `take_attempts`."""
        return tuple(self._attempts)

    def take_attempts(self) -> list[AuthAttempt]:
        """Hand over the audit entries (to persist them) and forget them here."""
        taken, self._attempts = self._attempts, []
        return taken

    # -- internals -------------------------------------------------------------------------------

    def _refuse(
        self, now: float, staff_id: str, reason: str, locked_until: float | None = None
    ) -> NoReturn:
        self._attempts.append(AuthAttempt(now, staff_id, False, reason))
        raise AuthenticationFailed(staff_id, reason, locked_until)

    def _issue(self, staff_id: str, now: float) -> Authentication:
        return Authentication(staff_id, TWO_FACTORS, now, self._tag(staff_id, TWO_FACTORS, now))

    def _tag(self, staff_id: str, factors: Sequence[AuthFactor], at: float) -> bytes:
        # float.hex is exact, and "\x00" cannot occur in an id, so the message is unambiguous.
        message = "\x00".join([staff_id, ",".join(map(str, factors)), float(at).hex()])
        return hmac.new(self._key, message.encode(), hashlib.sha256).digest()

    def _burn_one_hash(self, pin: str) -> None:
        # An unknown id or badge costs the same hash as a known one (no timing difference).
        if self._dummy is None:
            self._dummy = self.hashing.hash("".join(secrets.choice("0123456789") for _ in "1234"))
        self._dummy.matches(pin)


# -- the staff file ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StaffFileIssue:
    """One problem in a staff file: where it is and what is wrong."""

    file: str
    path: str  # e.g. `staff[3].roles[0]`; `<root>` for the whole file
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.path}: {self.message}"


class StaffFileError(Exception):
    """A staff file that cannot be used; `issues` lists every problem found."""

    def __init__(self, issues: Sequence[StaffFileIssue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


class _StrictLoader(yaml.SafeLoader):
    """A safe loader that refuses a key given twice (PyYAML would keep the last silently)."""


def _strict_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
        except TypeError:
            continue  # an unhashable key: construct_mapping reports it
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} given twice (first on line {first})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _strict_mapping)

_ROOT_KEYS = ("staff",)
_PERSON_KEYS = {
    "id": True,
    "name": True,
    "roles": True,
    "department": False,
    "badge": True,
    "pin": True,
    "active": False,
}


def load_staff(path: str | Path, directory: StaffDirectory | None = None) -> StaffDirectory:
    """Read the staff file at `path` into `directory` (a new default one if None).

    Raises StaffFileError listing every problem (a missing file and bad YAML included); the
    directory is unchanged then.
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StaffFileError([StaffFileIssue(source, ROOT, "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise StaffFileError([StaffFileIssue(source, ROOT, f"cannot read file: {exc}")]) from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # safe: _StrictLoader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        issue = StaffFileIssue(source, ROOT, f"YAML error{yaml_error_at(exc)}")
        raise StaffFileError([issue]) from None
    except yaml.YAMLError as exc:
        raise StaffFileError([StaffFileIssue(source, ROOT, f"YAML error: {exc}")]) from None
    return parse_staff(data, source, directory)


def parse_staff(
    data: object, source: str, directory: StaffDirectory | None = None
) -> StaffDirectory:
    """Validate already-parsed staff data and add the people to `directory` (all or none)."""
    directory = StaffDirectory() if directory is None else directory
    issues: list[StaffFileIssue] = []

    def issue(path: str, message: str) -> None:
        issues.append(StaffFileIssue(source, path, message))

    people: list[tuple[StaffMember, str, str]] = []
    if not isinstance(data, Mapping):
        issue(ROOT, f"must be a mapping with `staff:`, not {describe_value(data)}")
        raise StaffFileError(issues)
    _unknown_keys(data, _ROOT_KEYS, ROOT, issue)
    entries = data.get("staff")
    if not isinstance(entries, list) or not entries:
        issue(join_path(ROOT, "staff"), f"must be a non-empty list, not {describe_value(entries)}")
        raise StaffFileError(issues)
    ids: dict[str, str] = {}  # id -> where it was first given
    badges: dict[str, str] = {}
    for i, entry in enumerate(entries):
        path = f"staff[{i}]"
        person = _parse_person(entry, path, issue)
        if person is None:
            continue
        member, badge, _ = person
        id_path, badge_path = join_path(path, "id"), join_path(path, "badge")
        if member.id in ids:
            issue(id_path, f"id {member.id!r} is also given at {ids[member.id]}")
        elif member.id in directory:
            issue(id_path, f"id {member.id!r} is already in the staff directory")
        if badge in badges:
            issue(badge_path, f"badge {badge!r} is also given at {badges[badge]}")
        elif directory.find_by_badge(badge) is not None:
            issue(badge_path, f"badge {badge!r} is already in the staff directory")
        ids.setdefault(member.id, id_path)
        badges.setdefault(badge, badge_path)
        people.append(person)
    if issues:
        raise StaffFileError(issues)
    for member, badge, pin in people:
        directory.add(member, badge, pin)
    return directory


_Report = Callable[[str, str], None]  # (path, message)


def _unknown_keys(data: Mapping[Any, Any], known: Sequence[str], path: str, issue: _Report) -> None:
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            issue(join_path(path, key), f"unknown key{hint}; known: {', '.join(known)}")


def _parse_person(entry: object, path: str, issue: _Report) -> tuple[StaffMember, str, str] | None:
    if not isinstance(entry, Mapping):
        issue(path, f"must be a mapping describing a person, not {describe_value(entry)}")
        return None
    _unknown_keys(entry, list(_PERSON_KEYS), path, issue)
    ok = True
    for key, required in _PERSON_KEYS.items():
        if required and key not in entry:
            issue(join_path(path, key), "missing")
            ok = False
    for key in ("id", "name", "department", "badge"):
        value = entry.get(key, "")
        if not isinstance(value, str):
            issue(join_path(path, key), f"must be text, not {describe_value(value)}")
            ok = False
    active = entry.get("active", True)
    if not isinstance(active, bool):
        issue(join_path(path, "active"), f"must be true or false, not {describe_value(active)}")
        ok = False
    roles: list[Role] = []
    raw_roles = entry.get("roles")
    if "roles" in entry and (not isinstance(raw_roles, list) or not raw_roles):
        issue(
            join_path(path, "roles"), f"must be a non-empty list, not {describe_value(raw_roles)}"
        )
        ok = False
    elif isinstance(raw_roles, list):
        for j, role in enumerate(raw_roles):
            try:
                roles.append(Role(role))
            except ValueError:
                known = ", ".join(r.value for r in Role)
                issue(f"{path}.roles[{j}]", f"unknown role {describe_value(role)}; known: {known}")
                ok = False
    pin = entry.get("pin")
    pin_text = pin if isinstance(pin, str) else ""
    if "pin" in entry:
        if not isinstance(pin, str):
            # Never describe the value: it is a PIN (and unquoted digits lose leading zeros).
            issue(join_path(path, "pin"), 'must be text in quotes, e.g. pin: "2580"')
            ok = False
        else:
            try:
                check_pin(pin)
            except InvalidArgument as exc:
                issue(join_path(path, "pin"), exc.reason)
                ok = False
    if isinstance(entry.get("badge"), str):
        try:
            check_badge(entry["badge"])
        except InvalidArgument as exc:
            issue(join_path(path, "badge"), exc.reason)
            ok = False
    if not ok:
        return None
    try:
        member = StaffMember(
            id=entry["id"],
            name=entry["name"],
            roles=frozenset(roles),
            department=entry.get("department", ""),
            active=active,
        )
    except InvalidArgument as exc:
        issue(join_path(path, exc.field), exc.reason)
        return None
    return member, entry["badge"], pin_text


__all__ = [
    "DEFAULT_FRESHNESS_S",
    "DEFAULT_HASHING",
    "DEFAULT_LOCKOUT_S",
    "DEFAULT_MAX_FAILURES",
    "INACTIVE",
    "NOT_ACCEPTED",
    "TWO_FACTORS",
    "AttemptKind",
    "AuthAttempt",
    "Authentication",
    "AuthenticationFailed",
    "Credential",
    "LockState",
    "PinHash",
    "PinHashing",
    "Role",
    "StaffDirectory",
    "StaffFileError",
    "StaffFileIssue",
    "StaffMember",
    "check_badge",
    "check_pin",
    "load_staff",
    "parse_staff",
]
