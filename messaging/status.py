"""Canonical statuses and the monotonic state machine, as pure functions.

Rules (design.md, "The state machine"):
- queued < sending < sent are ordered progress; a report never moves a message backwards.
- delivered, failed, expired, rejected and cancelled are terminal: the first final status wins
  and nothing moves a message out of one.
- unknown is soft-terminal: it yields to any later terminal status, and to nothing else.
- multipart messages (one receipt per part) roll up: every part delivered -> delivered; any part
  failed, expired or rejected -> that status.
The sender's own transitions (claim, retry) are a separate, explicit table, because a retry puts
a `sending` message back to `queued`, which no report may ever do.
"""

from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    EXPIRED = "expired"
    REJECTED = "rejected"
    UNKNOWN = "unknown"
    CANCELLED = "cancelled"  # by staff, before the sender claimed it: never reached a provider
    RECEIVED = "received"  # inbound messages only


TERMINAL = frozenset(
    {Status.DELIVERED, Status.FAILED, Status.EXPIRED, Status.REJECTED, Status.CANCELLED}
)
FAILURES = (Status.REJECTED, Status.FAILED, Status.EXPIRED)  # roll-up precedence, worst first
# A cancelled message may be sent after all (as a linked copy, like any resend).
RESENDABLE = frozenset(
    {Status.FAILED, Status.EXPIRED, Status.REJECTED, Status.UNKNOWN, Status.CANCELLED}
)
CANCELLABLE = frozenset({Status.QUEUED})
OUTBOUND = tuple(s for s in Status if s is not Status.RECEIVED)


# The staff repairs, stated once: the admin offers them and the services enforce them with these.
def can_resend(message) -> bool:
    """A finished outbound message that did not reach the handset may be sent again."""
    return message.direction == "outbound" and Status(message.status) in RESENDABLE


def can_cancel(message) -> bool:
    """Only a message the sender has not claimed yet may be cancelled."""
    return message.direction == "outbound" and Status(message.status) in CANCELLABLE


# Progress rank for the non-terminal statuses. Terminal and unknown are handled by rule.
_RANK = {Status.QUEUED: 0, Status.SENDING: 1, Status.SENT: 2}

# The sender may make these moves regardless of rank (claim, retry, give up, ambiguous send).
SENDER_TRANSITIONS = {
    Status.QUEUED: frozenset({Status.SENDING, Status.REJECTED}),
    Status.SENDING: frozenset(
        {Status.QUEUED, Status.SENT, Status.FAILED, Status.REJECTED, Status.UNKNOWN}
    ),
}


@dataclass(frozen=True)
class Decision:
    applied: bool
    status: Status  # the status the message has after the decision
    reason: str  # why it was or was not applied, shown in the audit timeline


def is_terminal(status) -> bool:
    return Status(status) in TERMINAL


def is_settled(status) -> bool:
    """Nothing more will happen to a message in this status: a terminal status, or an inbound
    message (received is all an inbound message ever is). The message page stops updating."""
    return Status(status) in TERMINAL or Status(status) == Status.RECEIVED


def decide(current, reported) -> Decision:
    """Whether a reported status moves a message that is in `current`."""
    current, reported = Status(current), Status(reported)
    if current == reported:
        return Decision(False, current, "no change: already " + current)
    if current in TERMINAL:
        return Decision(False, current, f"ignored: {current} is final")
    if current == Status.UNKNOWN:
        if reported in TERMINAL:
            return Decision(True, reported, "unknown resolved by a definitive status")
        return Decision(False, current, "ignored: unknown yields only to a final status")
    if reported in TERMINAL or reported == Status.UNKNOWN:
        return Decision(True, reported, "applied")
    if reported == Status.RECEIVED:
        return Decision(False, current, "ignored: received is for inbound messages")
    if _RANK[reported] > _RANK[current]:
        return Decision(True, reported, "applied")
    return Decision(False, current, f"ignored: {reported} is behind {current}")


def sender_may(current, target) -> bool:
    """Whether the sender may move a message from `current` to `target`."""
    return Status(target) in SENDER_TRANSITIONS.get(Status(current), frozenset())


def roll_up(part_statuses) -> Status:
    """The status of a multipart message from the statuses of its parts."""
    parts = [Status(s) for s in part_statuses]
    if not parts:
        raise ValueError("a message has at least one part")
    for failure in FAILURES:
        if failure in parts:
            return failure
    if all(s == Status.DELIVERED for s in parts):
        return Status.DELIVERED
    pending = [s for s in parts if s not in TERMINAL and s != Status.UNKNOWN]
    if pending:
        return min(pending, key=_RANK.__getitem__)
    return Status.UNKNOWN  # every part delivered or unknown, at least one unknown
