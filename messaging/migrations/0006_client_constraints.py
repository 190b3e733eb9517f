"""Idempotency keys are per client (no longer per user); an outbound message always has one."""

import django.db.models.deletion
from django.db import migrations, models
from django.db.models import Q


class Migration(migrations.Migration):
    dependencies = [("messaging", "0005_default_client")]

    operations = [
        migrations.RemoveConstraint(model_name="idempotencykey", name="idempotency_key_unique"),
        migrations.RemoveField(model_name="idempotencykey", name="user"),
        migrations.AlterField(
            model_name="idempotencykey",
            name="client",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE, related_name="+", to="messaging.client"
            ),
        ),
        migrations.AddConstraint(
            model_name="idempotencykey",
            constraint=models.UniqueConstraint(
                fields=("client", "key"), name="idempotency_key_unique"
            ),
        ),
        migrations.AddConstraint(
            model_name="message",
            constraint=models.CheckConstraint(
                condition=Q(direction="inbound") | Q(client__isnull=False),
                name="msg_outbound_has_client",
            ),
        ),
    ]
