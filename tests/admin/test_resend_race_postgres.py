"""Two staff (or one double click) resending the same message at the same moment, on real
PostgreSQL: the original's row lock lets exactly one copy through; the others are refused."""

import pytest

from messaging.errors import AlreadyResent
from messaging.models import Message
from messaging.services import messages
from tests.admin.conftest import make_message
from tests.test_concurrency_postgres import run_threads

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]


def test_concurrent_resends_make_one_copy(on_postgres, staff):
    original = make_message(status="failed")
    refused = []

    def resend(_):
        try:
            messages.resend(Message.objects.get(pk=original.pk), source="admin", actor=staff,
                            reason="retry")  # fmt: skip
        except AlreadyResent:
            refused.append(1)

    run_threads(resend, list(range(8)), threads=8)
    assert Message.objects.filter(resend_of=original).count() == 1
    assert len(refused) == 7
