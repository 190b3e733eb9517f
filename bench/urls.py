"""Production URLs plus /bench/ok: the cheapest Django view there is, through the same
middleware stack, as the ceiling the webhook's throughput is compared with."""

from django.http import HttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from config.urls import urlpatterns as production


@csrf_exempt
def ok(request):
    return HttpResponse(b"ok", content_type="text/plain")


urlpatterns = [path("bench/ok", ok, name="bench-ok"), *production]
