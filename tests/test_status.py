"""The state machine, exhaustively: every (current, reported) pair against the rules."""

import itertools

import pytest

from messaging.status import (
    OUTBOUND,
    TERMINAL,
    Status,
    decide,
    is_terminal,
    roll_up,
    sender_may,
)

S = Status
PROGRESS = [S.QUEUED, S.SENDING, S.SENT]


def expected(current, reported):
    """The rules of design.md, written independently of status.decide."""
    if current == reported or current in TERMINAL:
        return current
    if current == S.UNKNOWN:
        return reported if reported in TERMINAL else current
    if reported in TERMINAL or reported == S.UNKNOWN:
        return reported
    if reported in PROGRESS and PROGRESS.index(reported) > PROGRESS.index(current):
        return reported
    return current


@pytest.mark.parametrize("current,reported", list(itertools.product(OUTBOUND, OUTBOUND)))
def test_every_pair(current, reported):
    decision = decide(current, reported)
    assert decision.status == expected(current, reported)
    assert decision.applied == (decision.status != current)
    assert decision.reason


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
@pytest.mark.parametrize("reported", OUTBOUND)
def test_terminal_is_sticky(terminal, reported):
    assert decide(terminal, reported).status == terminal


@pytest.mark.parametrize("reported", OUTBOUND)
def test_unknown_yields_only_to_final(reported):
    decision = decide(S.UNKNOWN, reported)
    assert decision.applied is (reported in TERMINAL)


def test_received_never_applies_to_outbound():
    for current in PROGRESS:
        assert decide(current, S.RECEIVED).applied is False


def test_sequences_are_order_independent_for_final_status():
    # Any order of {sent, delivered} ends delivered; a late sent is ignored.
    for order in itertools.permutations([S.SENT, S.DELIVERED, S.SENT]):
        status = S.SENDING
        for reported in order:
            status = decide(status, reported).status
        assert status == S.DELIVERED


def test_first_final_status_wins():
    status = decide(S.SENT, S.FAILED).status
    assert decide(status, S.DELIVERED).status == S.FAILED


def test_sender_transitions():
    assert sender_may(S.QUEUED, S.SENDING)
    assert sender_may(S.SENDING, S.QUEUED)  # retry
    assert sender_may(S.SENDING, S.UNKNOWN)  # ambiguous send
    assert not sender_may(S.SENT, S.QUEUED)
    assert not sender_may(S.DELIVERED, S.SENDING)
    for terminal in TERMINAL:
        assert not any(sender_may(terminal, target) for target in OUTBOUND)


@pytest.mark.parametrize(
    "parts,rolled",
    [
        ([S.DELIVERED], S.DELIVERED),
        ([S.DELIVERED, S.DELIVERED, S.DELIVERED], S.DELIVERED),
        ([S.DELIVERED, S.SENT], S.SENT),
        ([S.SENT, S.SENT], S.SENT),
        ([S.DELIVERED, S.FAILED], S.FAILED),
        ([S.EXPIRED, S.DELIVERED], S.EXPIRED),
        ([S.REJECTED, S.FAILED], S.REJECTED),
        ([S.FAILED, S.EXPIRED], S.FAILED),
        ([S.SENT, S.EXPIRED], S.EXPIRED),
        ([S.DELIVERED, S.UNKNOWN], S.UNKNOWN),
        ([S.UNKNOWN, S.SENT], S.SENT),
    ],
)
def test_roll_up(parts, rolled):
    assert roll_up(parts) == rolled


def test_roll_up_needs_parts():
    with pytest.raises(ValueError):
        roll_up([])


def test_is_terminal():
    assert {s for s in Status if is_terminal(s)} == set(TERMINAL)


def test_cancelled_is_final_and_staff_rules_are_stated_once():
    from types import SimpleNamespace

    from messaging.status import can_cancel, can_resend, decide, is_settled

    assert decide("cancelled", "delivered").applied is False  # a late report changes nothing
    assert decide("queued", "cancelled").applied is True
    assert is_settled("cancelled") and is_settled("received") and not is_settled("sent")

    def msg(status, direction="outbound"):
        return SimpleNamespace(status=status, direction=direction)

    assert can_cancel(msg("queued")) and not can_cancel(msg("sending"))
    assert not can_cancel(msg("queued", "inbound"))
    assert all(
        can_resend(msg(s)) for s in ("failed", "expired", "rejected", "unknown", "cancelled")
    )
    assert not any(can_resend(msg(s)) for s in ("queued", "sending", "sent", "delivered"))
    assert not can_resend(msg("received", "inbound"))
