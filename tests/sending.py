"""What the sender loop does for one message, for tests that drive a single send: one attempt
(messaging.services.sending.attempt) and, when the provider accepted it, the recording the loop
makes for its batch (record_accepted), here a batch of one."""

from messaging.services.sending import Accepted, attempt, record_accepted


def send_one(message, session, owner: str) -> str:
    outcome = attempt(message, session, owner)
    if isinstance(outcome, Accepted):
        return record_accepted([outcome])[message.pk]
    return outcome


def record_sent(message, result) -> str:
    return record_accepted([Accepted(message, result)])[message.pk]
