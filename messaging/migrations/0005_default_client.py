"""Existing outbound messages and idempotency keys move to the `default` client."""

from django.db import migrations


def to_default_client(apps, schema_editor):
    Client = apps.get_model("messaging", "Client")
    Message = apps.get_model("messaging", "Message")
    IdempotencyKey = apps.get_model("messaging", "IdempotencyKey")
    default, _ = Client.objects.get_or_create(slug="default", defaults={"name": "Default client"})
    Message.objects.filter(direction="outbound", client__isnull=True).update(client=default)
    IdempotencyKey.objects.filter(client__isnull=True).update(client=default)


class Migration(migrations.Migration):
    dependencies = [("messaging", "0004_clients")]

    operations = [migrations.RunPython(to_default_client, migrations.RunPython.noop)]
