"""A customer's ledger as the fold of its event stream: its receivables, and relance's dunning decisions on them.

Pure Python, no database. :class:`CustomerState` composes the receivables part (:mod:`shared.ledger.receivables`:
profile, invoices, payments, credit notes, their allocation), the dunning part (:mod:`shared.ledger.dunning`: the
engine's decisions and the ERP's acknowledgements of its commands) and the claims part (:mod:`shared.ledger.claims`:
late interest and indemnities owed besides principal, and the money allocated to them). The same code decides
whether an incoming event is new, a duplicate or a violation of a business rule (:meth:`CustomerState.check`) and
applies it (:meth:`CustomerState.apply`, which says what it changed); the event store keeps the folded state as a
snapshot (:mod:`shared.ledger.snapshot`) in the same transaction as the append.

The fold consumes typed events (:func:`shared.contracts.events.parse`): the ERP's models and relance's own.

Where the latest statement wins whatever the arrival order (the profile, an invoice's dispute, the ERP's word on a
command), "latest" is the event's ``occurred_at`` **capped at the time it was recorded**: an event cannot have
happened after relance received it, so an ERP clock set to 2099 cannot pin a profile or a dispute for good; such an
event counts as of its arrival, and later statements win over it. A state folded before this rule (holding an
instant later than the event now being recorded) has that instant capped the same way when the next event arrives.
Instants compare as instants, whatever spelling of UTC they were written with.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, TypeVar

from shared.contracts.events import Event
from shared.ledger import snapshot
from shared.ledger.claims import Claim, Claims
from shared.ledger.dunning import (
    KEPT_PER_KIND,
    REJECTED_TASK,
    Acknowledgement,
    Block,
    CreditCommand,
    Dunning,
    Escalation,
    Letter,
    LimitProposal,
    Pause,
    Reminded,
    Task,
)
from shared.ledger.hashing import utc
from shared.ledger.receivables import NEW, ZERO, Check, Credit, Invoice, Receivables, Touched, earlier

__all__ = [
    "KEPT_PER_KIND",
    "NEW",
    "REJECTED_TASK",
    "ZERO",
    "Changes",
    "Check",
    "Claim",
    "Claims",
    "Credit",
    "CustomerState",
    "Escalation",
    "Invoice",
]


@dataclass(frozen=True, slots=True)
class Changes:
    """What folding events changed, for the projections: invoices by id, credits by key."""

    invoices: frozenset[str] = frozenset()
    credits: frozenset[str] = frozenset()

    def __or__(self, other: Changes) -> Changes:
        return Changes(self.invoices | other.invoices, self.credits | other.credits)


@dataclass
class CustomerState:
    tenant: str
    customer_id: str
    version: int = 0
    head_hash: str = "0" * 64
    receivables: Receivables = field(default_factory=Receivables)
    dunning: Dunning = field(default_factory=Dunning)
    claims: Claims = field(default_factory=Claims)
    # Bookkeeping of the store, not part of the state: the version of the last saved snapshot.
    snapshot_version: int = field(default=0, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.receivables.claims = self.claims  # free credit settles claims too (see shared.ledger.claims)

    def __deepcopy__(self, memo: dict[int, Any]) -> CustomerState:
        """A copy sharing nothing that changes (the engine folds decisions into one to read them back).

        Field by field, through the parts' dataclasses, dicts, lists and sets, the immutable values shared: the
        same result as :func:`copy.deepcopy`'s generic walk (no part of a state is referenced twice), several times
        faster.
        """
        return self._copy(frozenset())

    def _copy(self, shared: frozenset[str]) -> CustomerState:
        copied = CustomerState(
            tenant=self.tenant,
            customer_id=self.customer_id,
            version=self.version,
            head_hash=self.head_hash,
            receivables=_copied(self.receivables, shared),
            dunning=_copied(self.dunning),
            claims=_copied(self.claims),
        )
        copied.snapshot_version = self.snapshot_version
        return copied

    def decisions_copy(self) -> CustomerState:
        """A copy to fold relance's own decisions into and read them back (the engine's claims): a deep copy but
        for the receivables' parts only the ERP's events change (:data:`ERP_ONLY`), shared with this state.

        The fold of a decision changes the dunning and claims parts, and through free credit the invoices, credits
        and their indexes, never those parts; an ERP event must not be folded into such a copy.
        """
        return self._copy(ERP_ONLY)

    # ----------------------------------------------------------------------------------------------- deciding
    def check(self, event: Event) -> Check:
        """Is this event new, a duplicate of what the ledger holds, or against a business rule?"""
        found = self.receivables.check(event)
        if found.verdict != "new":
            return found
        return self.dunning.check(event) or NEW

    # ----------------------------------------------------------------------------------------------- applying
    def apply(
        self, event: Event, occurred_at: datetime | None = None, event_id: str = "", *, recorded_at: datetime | None
    ) -> Changes:
        """Fold one accepted event into the state; returns the invoices and credits it changed.

        ``event_id`` names the command a ``credit.blocked`` / ``credit.unblocked`` causes (the outbox uses the event
        id as the command id), so the ERP's acknowledgement can be matched with the block it is about.
        ``recorded_at`` (when the ledger appended the event) caps ``occurred_at``: see the module's doc. Every caller
        must say it, so that no fold of a recorded stream forgets the cap (the ledger's fold and verify's rebuild
        must agree); None only for a fold of events that were never recorded.
        """
        occurred = "" if occurred_at is None else utc(occurred_at).isoformat()
        if recorded_at is not None:
            recorded = utc(recorded_at).isoformat()
            occurred = earlier(occurred, recorded)
            self.receivables.cap(event, recorded)
            self.dunning.cap(event, recorded)
        touched = Touched()
        self.receivables.apply(event, occurred, touched)
        self.dunning.apply(event, occurred, event_id, touched)
        self.claims.apply(event, self.receivables, touched)
        return Changes(frozenset(touched.invoices), frozenset(touched.credits))

    # ----------------------------------------------------------------------------------------------- reading
    def balances(self) -> dict[str, Decimal]:
        """Per currency: open invoices' outstanding less credit not yet applied (negative = in credit); principal
        only, the claims owed are :meth:`claims_owed`."""
        return self.receivables.balances()

    def claims_owed(self) -> dict[str, Decimal]:
        """Per currency: late interest and indemnities owed (claimed or not), apart from principal."""
        return self.claims.owed()

    def unallocated(self) -> dict[str, Decimal]:
        return self.receivables.unallocated()

    def open_invoices(self) -> list[Invoice]:
        return self.receivables.open_invoices()

    def overdue(self, as_of: date) -> dict[str, Decimal]:
        return self.receivables.overdue(as_of)

    # The parts' fields, read through (what the engine, the agenda, the notifier and the projections read).
    @property
    def profile(self) -> dict[str, Any] | None:
        return self.receivables.profile

    @property
    def profile_at(self) -> str | None:
        return self.receivables.profile_at

    @property
    def invoices(self) -> dict[str, Invoice]:
        return self.receivables.invoices

    @property
    def credits(self) -> dict[str, Credit]:
        return self.receivables.credits

    @property
    def cancelled(self) -> dict[str, str]:
        return self.receivables.cancelled

    @property
    def disputes(self) -> dict[str, str]:
        return self.receivables.disputes

    @property
    def dispute_latest(self) -> dict[str, list[str]]:
        return self.receivables.dispute_latest

    @property
    def due_date_passed(self) -> dict[str, str]:
        return self.receivables.due_date_passed

    @property
    def promises(self) -> dict[str, dict[str, Any]]:
        return self.receivables.promises

    @property
    def plans(self) -> dict[str, dict[str, Any]]:
        return self.receivables.plans

    @property
    def fingerprints(self) -> dict[str, str]:
        return self.receivables.fingerprints

    @property
    def promise_recorded(self) -> dict[str, str]:
        return self.receivables.promise_recorded

    @property
    def escalations(self) -> dict[str, Escalation]:
        return self.dunning.escalations

    @property
    def credit_block(self) -> Block | None:
        return self.dunning.credit_block

    @property
    def blocks(self) -> int:
        return self.dunning.blocks

    @property
    def tasks(self) -> dict[str, Task]:
        return self.dunning.tasks

    @property
    def reminded(self) -> dict[str, Reminded]:
        return self.dunning.reminded

    @property
    def credit_commands(self) -> dict[str, CreditCommand]:
        return self.dunning.credit_commands

    @property
    def pause(self) -> Pause | None:
        """The pause in force as folded (one past its ``until`` stays: see :func:`shared.ledger.tasks.paused_on`)."""
        return self.dunning.pause

    @property
    def limit_proposals(self) -> dict[str, LimitProposal]:
        return self.dunning.limit_proposals

    @property
    def letters(self) -> dict[str, Letter]:
        """The letters rendered for the customer and their proof (posted on, tracking number, delivered on)."""
        return self.dunning.letters

    @property
    def acknowledgements(self) -> dict[str, Acknowledgement]:
        return self.dunning.acknowledgements

    # ----------------------------------------------------------------------------------------------- snapshot
    def to_json(self) -> dict[str, Any]:
        """The snapshot the store keeps (:mod:`shared.ledger.snapshot`)."""
        head = {"tenant": self.tenant, "customer_id": self.customer_id, "version": self.version}
        return {**head, "head_hash": self.head_hash, **snapshot.dump(self.receivables, self.dunning, self.claims)}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> CustomerState:
        receivables, dunning, claims = snapshot.load(raw)
        return cls(
            tenant=raw["tenant"],
            customer_id=raw["customer_id"],
            version=raw["version"],
            head_hash=raw["head_hash"],
            receivables=receivables,
            dunning=dunning,
            claims=claims,
        )


_Part = TypeVar("_Part")
_IMMUTABLE = (str, int, float, bool, Decimal, date, datetime, type(None))
_ATOMS = frozenset(_IMMUTABLE)
_FIELDS: dict[type, tuple[str, ...]] = {}  # a dataclass of the state -> its fields' names, looked up once


# The receivables' parts only the ERP's events change (see CustomerState.decisions_copy)
ERP_ONLY = frozenset(
    {
        "profile",
        "profile_at",
        "cancelled",
        "disputes",
        "dispute_latest",
        "due_date_passed",
        "promises",
        "plans",
        "fingerprints",
        "promise_recorded",
    }
)


def _copied(part: _Part, shared: frozenset[str] = frozenset()) -> _Part:
    """A dataclass of the state, copied field by field (the receivables' link to the claims is set by the state),
    the fields named in ``shared`` shared with it."""
    kind = type(part)
    names = _FIELDS.get(kind)
    if names is None:
        fields = dataclasses.fields(kind)  # type: ignore[arg-type]  # every part of a state is a dataclass
        names = _FIELDS[kind] = tuple(each.name for each in fields)
    new = object.__new__(kind)
    receivables = isinstance(part, Receivables)
    for name in names:
        value = None if receivables and name == "claims" else getattr(part, name)
        object.__setattr__(new, name, value if type(value) in _ATOMS or name in shared else _value(value))
    return new


def _value(value: Any) -> Any:
    if isinstance(value, _IMMUTABLE):
        return value
    # An immutable item is shared without a call (the type test is exact, anything else goes through _value)
    if isinstance(value, dict):
        return {key: item if type(item) in _ATOMS else _value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [item if type(item) in _ATOMS else _value(item) for item in value]
    if isinstance(value, set):
        return {item if type(item) in _ATOMS else _value(item) for item in value}
    if isinstance(value, tuple):
        return tuple(item if type(item) in _ATOMS else _value(item) for item in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _copied(value)
    return copy.deepcopy(value)
