"""Who may do what in the controlled-drug custody lifecycle, and the two-person rules.

Pure (DESIGN.md principle 1). Refusals raise `PermissionDenied` (PERMISSION_DENIED at the edge),
naming the person, their roles and the action; authentications that are stale, unknown to the
directory or of an inactive person raise `AuthenticationFailed` (people.py).

Permission table (`PERMISSIONS`), grounded in hospital-domain.md 1.3 and 1.4
-----------------------------------------------------------------------------
| role             | actions                                                                 |
| ---------------- | ----------------------------------------------------------------------- |
| pharmacist       | approve, reject, pick, verify, load, return_receive,                    |
|                  | resolve_discrepancy, approve_resolution, witness, recover, read_ledger  |
| anesthesiologist | request, receive, administer, waste, witness, reconcile,                |
|                  | resolve_discrepancy                                                     |
| or_nurse         | request, receive, witness, reconcile, resolve_discrepancy               |
| logistics        | recover (only as the second person: see `STEP_RULES`)                   |
| auditor          | read_ledger                                                             |

Why:
- Pharmacists review requests (REQUESTED -> APPROVED/REJECTED), issue (发药人: pick) and check
  (复核人: verify), load the robot compartment (custody passes from the pharmacist to a sealed
  compartment with them as the accountable person), receive returns with a blind count and
  approve discrepancy resolutions ("pharmacist approval", 1.4). They read the ledger for the
  pharmacy's daily discrepancy report and vault-vs-cabinet comparison (1.3).
- Anesthesiologists order for their case, receive at the OR, administer, waste residual drug
  (with a witness) and submit the end-of-case reconciliation. OR nurses order, receive, witness
  ("in the OR, the second team member witnesses", 1.3) and reconcile, but neither administer
  nor waste in this model (no nurse anesthetists). Whoever had custody may propose a
  discrepancy resolution (with a second person); a pharmacist approves it.
- Logistics staff run the robots: they are the second person when a faulted robot's compartment
  is forced open (RECOVER), next to a pharmacist who takes custody of what comes out. They never
  hold controlled drugs themselves, so they do not load: LOAD puts drugs in a compartment whose
  accountable person is the loader, who must be someone allowed to hold them.
- Auditors only read. Nobody but pharmacists and auditors reads the whole ledger.

Steps (`STEP_RULES`)
--------------------
Every custody step is checked with `StepAuth.check`: the actor and (where the rule has one) the
second person authenticate with badge and PIN *for this step* (at most `freshness_s`, 120 s by
default, before it), are different people, and hold the action (actor) or the rule's
`second_needs` action (second person). Two-person steps, after 1.4 rule 3 and [A6]:

| step                | second   | second needs | notes                                   |
| ------------------- | -------- | ------------ | --------------------------------------- |
| pick                | optional | verify       | issue with the 复核人 at the bench      |
| verify              | none     |              | pass the picker in `exclude`            |
| receive             | optional | witness      | the recipient's own two factors         |
| waste               | required | witness      | residual discard, witnessed             |
| reconcile           | optional | witness      | empty ampoules counted with a witness   |
| return_receive      | required | witness      | returns are witnessed ([A6], 1.4)       |
| resolve_discrepancy | required | witness      | "a reason code, a second person"        |
| approve_resolution  | none     |              | exclude the resolver and their witness  |
| recover             | required | recover      | led by a pharmacist                     |

The other steps (request, approve, reject, load, administer, read_ledger) are one person.
`exclude` names people who may take no part in this step because they took a part that this
step checks (the picker for VERIFY, the resolver for APPROVE_RESOLUTION).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from fleet.custody.ledger import AuthFactor
from fleet.custody.people import Authentication, Role, StaffDirectory, StaffMember
from fleet.domain.errors import InvalidArgument, PermissionDenied


class Action(StrEnum):
    """A thing a person does in the custody lifecycle (hospital-domain.md 1.4)."""

    REQUEST = "request"  # order a controlled drug for a case or base stock
    APPROVE = "approve"  # pharmacist review of a request
    REJECT = "reject"
    PICK = "pick"  # take from the vault, lot and expiry scanned (发药人)
    VERIFY = "verify"  # second check of a pick (复核人)
    LOAD = "load"  # into a robot compartment, locked and sealed
    RECEIVE = "receive"  # open the compartment at the destination, blind count
    ADMINISTER = "administer"
    WASTE = "waste"  # residual discarded, witnessed
    WITNESS = "witness"  # the second person of a witnessed step (a part, not a step)
    RECONCILE = "reconcile"  # end-of-case: unused quantity and empty ampoules by lot
    RETURN_RECEIVE = "return_receive"  # pharmacy accepts a return, blind count
    RESOLVE_DISCREPANCY = "resolve_discrepancy"  # propose a resolution with a reason
    APPROVE_RESOLUTION = "approve_resolution"
    RECOVER = "recover"  # open a faulted robot's compartment: two people
    READ_LEDGER = "read_ledger"


_A = Action
PERMISSIONS: Mapping[Role, frozenset[Action]] = MappingProxyType(
    {
        Role.PHARMACIST: frozenset(
            {
                _A.APPROVE,
                _A.REJECT,
                _A.PICK,
                _A.VERIFY,
                _A.LOAD,
                _A.RETURN_RECEIVE,
                _A.RESOLVE_DISCREPANCY,
                _A.APPROVE_RESOLUTION,
                _A.WITNESS,
                _A.RECOVER,
                _A.READ_LEDGER,
            }
        ),
        Role.ANESTHESIOLOGIST: frozenset(
            {
                _A.REQUEST,
                _A.RECEIVE,
                _A.ADMINISTER,
                _A.WASTE,
                _A.WITNESS,
                _A.RECONCILE,
                _A.RESOLVE_DISCREPANCY,
            }
        ),
        Role.OR_NURSE: frozenset(
            {_A.REQUEST, _A.RECEIVE, _A.WITNESS, _A.RECONCILE, _A.RESOLVE_DISCREPANCY}
        ),
        Role.LOGISTICS: frozenset({_A.RECOVER}),
        Role.AUDITOR: frozenset({_A.READ_LEDGER}),
    }
)


class SecondPerson(StrEnum):
    """Whether a step has a second person (checker or witness)."""

    NONE = "none"
    OPTIONAL = "optional"
    REQUIRED = "required"


@dataclass(frozen=True, slots=True)
class StepRule:
    """Who takes part in one kind of step.

    `second_needs`: the action the second person must hold. `actor_roles`: if set, the actor
    must also have one of these roles (RECOVER: a pharmacist, who takes custody of the drugs).
    """

    second: SecondPerson = SecondPerson.NONE
    second_needs: Action = Action.WITNESS
    actor_roles: frozenset[Role] | None = None


_S = SecondPerson
STEP_RULES: Mapping[Action, StepRule] = MappingProxyType(
    {
        _A.REQUEST: StepRule(),
        _A.APPROVE: StepRule(),
        _A.REJECT: StepRule(),
        _A.PICK: StepRule(_S.OPTIONAL, _A.VERIFY),
        _A.VERIFY: StepRule(),
        _A.LOAD: StepRule(),
        _A.RECEIVE: StepRule(_S.OPTIONAL),
        _A.ADMINISTER: StepRule(),
        _A.WASTE: StepRule(_S.REQUIRED),
        _A.RECONCILE: StepRule(_S.OPTIONAL),
        _A.RETURN_RECEIVE: StepRule(_S.REQUIRED),
        _A.RESOLVE_DISCREPANCY: StepRule(_S.REQUIRED),
        _A.APPROVE_RESOLUTION: StepRule(),
        _A.RECOVER: StepRule(_S.REQUIRED, _A.RECOVER, frozenset({Role.PHARMACIST})),
        _A.READ_LEDGER: StepRule(),
    }
)


def allowed_actions(
    member: StaffMember, table: Mapping[Role, frozenset[Action]] = PERMISSIONS
) -> frozenset[Action]:
    """Every action `member`'s roles allow (none for an inactive person)."""
    if not member.active:
        return frozenset()
    return frozenset().union(*(table.get(role, frozenset()) for role in member.roles))


def authorize(
    member: StaffMember, action: Action, table: Mapping[Role, frozenset[Action]] = PERMISSIONS
) -> None:
    """PermissionDenied unless one of `member`'s roles allows `action` and they are active."""
    if not member.active:
        raise PermissionDenied(f"{member.describe()} is inactive and may not {_verb(action)}")
    if action not in allowed_actions(member, table):
        raise PermissionDenied(f"{member.describe()} may not {_verb(action)}")


def _verb(action: Action) -> str:
    return action.value.replace("_", " ")


@dataclass(frozen=True, slots=True)
class AuthorizedStep:
    """The people of one custody step, checked: what the ledger records as actor and witness.

    `actor_auth` / `witness_auth` are the factors each presented (for `EventDraft`);
    `witness` is None for a one-person step.
    """

    action: Action
    actor: StaffMember
    actor_auth: tuple[AuthFactor, ...]
    witness: StaffMember | None
    witness_auth: tuple[AuthFactor, ...]
    at: float

    @property
    def witness_id(self) -> str:
        """The second person's id, `""` when there is none (the ledger's convention)."""
        return "" if self.witness is None else self.witness.id


class StepAuth:
    """Checks the people of custody steps against a `StaffDirectory` and the rules above.

    The lifecycle calls `check` at every custody step, with the authentications the people
    made for that step.
    """

    def __init__(
        self,
        directory: StaffDirectory,
        *,
        max_age_s: float | None = None,
        rules: Mapping[Action, StepRule] = STEP_RULES,
        table: Mapping[Role, frozenset[Action]] = PERMISSIONS,
    ) -> None:
        self.directory = directory
        self.max_age_s = max_age_s  # None: the directory's freshness window
        self.rules = rules
        self.table = table

    def check(
        self,
        action: Action,
        actor_auth: Authentication,
        witness_auth: Authentication | None = None,
        *,
        now: float,
        exclude: Collection[str] = (),
        actor_in: Collection[str] | None = None,
    ) -> AuthorizedStep:
        """Check one step: both authentications are the directory's and fresh at `now`, the
        people are different, none of them is in `exclude`, the actor is in `actor_in` (when
        given: e.g. the order's recipient and their alternates), and each holds the action
        for their part.

        InvalidArgument (`action`, `witness_auth`) for a step that does not exist or a second
        person missing or not expected; AuthenticationFailed; PermissionDenied.
        """
        rule = self.rules.get(action)
        if rule is None:
            raise InvalidArgument(
                "action", f"{_verb(action)} is not a step of its own (a witness is a part of one)"
            )
        if witness_auth is None and rule.second is SecondPerson.REQUIRED:
            raise InvalidArgument(
                "witness_auth",
                f"{_verb(action)} needs a second person (who may {_verb(rule.second_needs)})",
            )
        if witness_auth is not None and rule.second is SecondPerson.NONE:
            raise InvalidArgument("witness_auth", f"{_verb(action)} has no second person")
        actor = self.directory.check_authentication(actor_auth, now, max_age_s=self.max_age_s)
        witness = None
        if witness_auth is not None:
            witness = self.directory.check_authentication(
                witness_auth, now, max_age_s=self.max_age_s
            )
            if witness.id == actor.id:
                raise PermissionDenied(
                    f"{actor.describe()} may not be their own second person for {_verb(action)}"
                )
        for person in (actor, witness):
            if person is not None and person.id in exclude:
                raise PermissionDenied(
                    f"{person.describe()} may take no part in this {_verb(action)}: they took "
                    "a part of this unit's custody that this step checks"
                )
        if actor_in is not None and actor.id not in actor_in:
            expected = ", ".join(sorted(actor_in)) or "nobody"
            raise PermissionDenied(
                f"{actor.describe()} is not the person for this {_verb(action)} "
                f"(expected: {expected})"
            )
        authorize(actor, action, self.table)
        if rule.actor_roles is not None and not actor.roles & rule.actor_roles:
            roles = ", ".join(sorted(r.value for r in rule.actor_roles))
            raise PermissionDenied(
                f"{actor.describe()} may not lead {_verb(action)} (only: {roles}); "
                "they may take the second part"
            )
        if witness is not None:
            try:
                authorize(witness, rule.second_needs, self.table)
            except PermissionDenied as exc:
                raise PermissionDenied(
                    f"{exc} (as the second person for {_verb(action)})"
                ) from None
        return AuthorizedStep(
            action=action,
            actor=actor,
            actor_auth=actor_auth.factors,
            witness=witness,
            witness_auth=() if witness_auth is None else witness_auth.factors,
            at=now,
        )


def require_two_people(
    first: Authentication,
    second: Authentication,
    action: Action,
    directory: StaffDirectory,
    *,
    now: float,
    exclude: Collection[str] = (),
    max_age_s: float | None = None,
) -> tuple[StaffMember, StaffMember]:
    """The two people of a two-person step (`first` does `action`, `second` checks or
    witnesses), checked as by `StepAuth.check`. A pharmacist cannot be their own second
    checker or witness. InvalidArgument for a step that has no second person."""
    step = StepAuth(directory, max_age_s=max_age_s).check(
        action, first, second, now=now, exclude=exclude
    )
    assert step.witness is not None  # check() returns a witness whenever one was given
    return step.actor, step.witness


__all__ = [
    "PERMISSIONS",
    "STEP_RULES",
    "Action",
    "AuthorizedStep",
    "SecondPerson",
    "StepAuth",
    "StepRule",
    "allowed_actions",
    "authorize",
    "require_two_people",
]
