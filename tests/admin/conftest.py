"""Fixtures for the admin tests: staff users with chosen permissions and message rows."""

import itertools
import uuid
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone

from messaging.models import Message, MessagePart, StatusEvent

_numbers = itertools.count(100)


@pytest.fixture
def make_staff(django_user_model):
    """A logged-in client for a staff user with exactly the given messaging permissions."""

    def make(*codenames, username=None):
        user = django_user_model.objects.create_user(
            username or f"staff-{uuid.uuid4().hex[:6]}", password="pw", is_staff=True
        )
        user.user_permissions.set(
            Permission.objects.filter(content_type__app_label="messaging", codename__in=codenames)
        )
        client = Client()
        client.force_login(user)
        client.user = user
        return client

    return make


@pytest.fixture
def superuser_client(staff):
    client = Client()
    client.force_login(staff)
    client.user = staff
    return client


def make_message(*, created_ago=None, created_at=None, parts=(), **fields):
    """A message row as the sender and receipts would leave it (written directly: these tests
    are about reading and repairing, not about producing the rows)."""
    defaults = {
        "to_number": f"+4479111{next(_numbers):05d}",
        "body": "Hello",
        "provider": "sandbox",
        "status": "delivered",
    }
    defaults.update(fields)
    if defaults.get("direction", "outbound") == "outbound":
        defaults.setdefault("client", Message.client.field.related_model.objects.default())
    message = Message.objects.create(**defaults)
    if created_ago is not None:
        created_at = timezone.now() - created_ago
    if created_at is not None:
        Message.objects.filter(pk=message.pk).update(created_at=created_at)
        message.refresh_from_db()
    for index, part_id in enumerate(parts):
        MessagePart.objects.create(
            message=message, index=index, provider=message.provider, provider_message_id=part_id
        )
    StatusEvent.objects.create(message=message, status="queued", source="api", note="accepted")
    return message


@pytest.fixture
def messages_factory():
    return make_message


def ago(**kwargs):
    return timedelta(**kwargs)
