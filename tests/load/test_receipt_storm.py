"""A receipt storm over real HTTP on PostgreSQL (scaled down; the full 100k-receipt run is
bench/storm.py): receipts for many messages, 30% exact duplicates, shuffled, posted by 16
concurrent connections to the live server.

- every request is answered 200 (zero 5xx) and stored;
- every message ends in the status the oracle (messaging.status.decide) computes;
- every distinct receipt is exactly one StatusEvent, duplicates none;
- posting the whole set again changes nothing: same messages (status, error, timestamps), no
  new event.
Run for both ways of applying: inline in the view, and stored then applied by appliers running
concurrently with the storm.
"""

import pytest

from messaging import applier
from messaging.models import StatusEvent
from tests.load import storm

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres, pytest.mark.slow]

SIZES = {"deferred": (1000, 5000), "inline": (300, 1500)}  # messages, receipts


@pytest.mark.parametrize("mode", ["deferred", "inline"])
def test_storm_ends_where_the_oracle_says_and_replay_changes_nothing(
    on_postgres, live_server, settings, mode
):
    settings.WEBHOOK_APPLY_INLINE = mode == "inline"
    messages, receipts = SIZES[mode]
    plan = storm.make_plan(messages, receipts, duplicate_share=0.3, seed=5)
    assert plan.duplicates == receipts * 3 // 10
    storm.seed_messages(plan)

    with storm.Appliers(2 if mode == "deferred" else 0) as appliers:
        statuses = storm.post_all(live_server.url, plan.stream, connections=16)
    assert not appliers.errors
    applier.drain()
    assert statuses == {200: receipts}

    facts = storm.verify(plan)
    assert facts["wrong_status"] == {}
    assert facts["events"] == facts["distinct_receipts"] == len(plan.distinct)
    assert facts["events_doubled"] == facts["receipts_without_event"] == 0
    assert facts["events_not_in_plan"] == 0
    assert facts["duplicate_events"] == plan.duplicates  # every repeat shown as ignored
    assert facts["duplicate_events_applied"] == 0
    assert facts["rows"] == receipts and facts["rows_5xx"] == 0
    assert facts["rows_by_state"] == {"processed": receipts}
    # the plan is not trivial: messages end in every kind of state
    assert {str(s) for s in plan.expected.values()} >= {"delivered", "failed", "unknown", "sent"}

    before = storm.message_snapshot()
    events_before = StatusEvent.objects.count()
    replay = list(reversed(plan.stream))
    with storm.Appliers(2 if mode == "deferred" else 0) as appliers:
        statuses = storm.post_all(live_server.url, replay, connections=16)
    assert not appliers.errors
    applier.drain()
    assert statuses == {200: receipts}
    assert storm.message_snapshot() == before
    again = storm.verify(plan)
    # nothing new applied: every replayed receipt is one more ignored duplicate
    assert StatusEvent.objects.count() == events_before + receipts
    assert again["events"] == facts["events"] and again["duplicate_events_applied"] == 0
    assert again["duplicate_events"] == plan.duplicates + receipts
    assert again["rows"] == 2 * receipts
