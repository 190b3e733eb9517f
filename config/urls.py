from django.contrib import admin
from django.urls import include, path

from messaging.health import healthz, readyz

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("api/v1/", include("messaging.api.urls")),
    path("webhooks/", include("messaging.webhooks.urls")),
    path("admin/", admin.site.urls),
]
