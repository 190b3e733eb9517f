# Indexes for the staff admin (issue 4): exact search by provider id (message and part) and by
# sender number, and the error-code and direction filters ordered by newest first.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("messaging", "0001_initial"),
    ]

    operations = [
        # msg_error_created_idx below serves every query this one did.
        migrations.RemoveIndex(model_name="message", name="msg_error_code_idx"),
        migrations.AddIndex(
            model_name="message",
            index=models.Index(fields=["provider_message_id"], name="msg_provider_msgid_idx"),
        ),
        migrations.AddIndex(
            model_name="message",
            index=models.Index(fields=["from_number"], name="msg_from_idx"),
        ),
        migrations.AddIndex(
            model_name="message",
            index=models.Index(fields=["error_code", "-created_at"], name="msg_error_created_idx"),
        ),
        migrations.AddIndex(
            model_name="message",
            index=models.Index(fields=["direction", "-created_at"], name="msg_direction_created_idx"),
        ),
        migrations.AddIndex(
            model_name="messagepart",
            index=models.Index(fields=["provider_message_id"], name="part_provider_msgid_idx"),
        ),
    ]
