from django.contrib import admin
from django.urls import include, path

from messaging.health import healthz, metrics_view, readyz

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("api/v1/", include("messaging.api.urls")),
    path("webhooks/", include("messaging.webhooks.urls")),
    path("admin/", admin.site.urls),
]
