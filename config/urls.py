from django.contrib import admin
from django.contrib.staticfiles.storage import staticfiles_storage
from django.urls import include, path, reverse_lazy
from django.views.generic import RedirectView

from messaging.health import healthz, metrics_view, readyz

# The admin's "View site" link: Herald has no public site, its API docs are the useful page.
admin.site.site_url = reverse_lazy("api-docs")


class FaviconView(RedirectView):
    """Browsers ask for /favicon.ico on every page that names none (the API, the docs)."""

    permanent = False

    def get_redirect_url(self, *args, **kwargs):
        return staticfiles_storage.url("herald/favicon.svg")


urlpatterns = [
    path("favicon.ico", FaviconView.as_view(), name="favicon"),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("api/v1/", include("messaging.api.urls")),
    path("webhooks/", include("messaging.webhooks.urls")),
    path("admin/", admin.site.urls),
]
