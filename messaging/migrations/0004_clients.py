"""Clients and their API keys; every outbound message and idempotency key gets a client.

Three steps so that PostgreSQL never alters a table with pending trigger events: add the columns
(nullable), move existing rows to the `default` client, then tighten (0005, 0006)."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("messaging", "0003_provider_pacing"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="Client",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("name", models.CharField(max_length=100)),
                ("slug", models.SlugField(unique=True)),
                ("is_active", models.BooleanField(default=True, verbose_name="active")),
                ("send_rate_limit", models.CharField(blank=True, max_length=32)),
                ("read_rate_limit", models.CharField(blank=True, max_length=32)),
                ("default_provider", models.CharField(blank=True, max_length=32)),
                ("default_sender_id", models.CharField(blank=True, max_length=32)),
                ("allowed_providers", models.JSONField(blank=True, default=list)),
                ("owned_numbers", models.JSONField(blank=True, default=list)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
            ],
            options={
                "ordering": ["name"],
                "permissions": [
                    ("manage_client", "Can create API keys for and revoke keys of a client")
                ],
            },
        ),
        migrations.CreateModel(
            name="ApiKey",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("name", models.CharField(max_length=100)),
                (
                    "kind",
                    models.CharField(
                        choices=[("live", "Live"), ("test", "Test (always the sandbox)")],
                        default="live",
                        max_length=4,
                    ),
                ),
                ("prefix", models.CharField(max_length=32)),
                ("hashed_key", models.CharField(max_length=64, unique=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("last_used_at", models.DateTimeField(blank=True, null=True)),
                ("revoked_at", models.DateTimeField(blank=True, null=True)),
                (
                    "client",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="api_keys",
                        to="messaging.client",
                    ),
                ),
                (
                    "created_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={"verbose_name": "API key", "ordering": ["-created_at"]},
        ),
        migrations.AddField(
            model_name="message",
            name="client",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="messages",
                to="messaging.client",
            ),
        ),
        migrations.AddField(
            model_name="message",
            name="api_key",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="messaging.apikey",
            ),
        ),
        migrations.AddField(
            model_name="idempotencykey",
            name="client",
            field=models.ForeignKey(
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="+",
                to="messaging.client",
            ),
        ),
    ]
