"""What the providers' tutorials do with a delivery receipt, in plain Django: parse the Vonage
JSON receipt, UPDATE the message by its provider id, INSERT one event. No authentication, no
evidence row, no dedupe, no state machine, no transaction. The baseline Herald's webhook is
compared with (bench/ingest.py); never mounted outside the bench."""

import json

from django.http import HttpResponse
from django.urls import path
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from bench.urls import urlpatterns as bench_urls
from messaging.models import Message, StatusEvent


@csrf_exempt
def tutorial_receipt(request):
    data = json.loads(request.body)
    # get(), as the tutorials write it (first() would add ORDER BY id, a worse plan)
    try:
        message_id = Message.objects.values_list("id", flat=True).get(
            provider_message_id=data["messageId"]
        )
    except Message.DoesNotExist:
        return HttpResponse(status=204)
    Message.objects.filter(pk=message_id).update(status=data["status"], updated_at=timezone.now())
    StatusEvent.objects.create(message_id=message_id, status=data["status"], source="webhook",
                               provider_status=data["status"], raw_payload=data)  # fmt: skip
    return HttpResponse(status=204)


urlpatterns = [path("bench/tutorial", tutorial_receipt, name="bench-tutorial"), *bench_urls]
