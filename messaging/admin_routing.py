"""The admin's routing: the Route table (validated by the model, as SMS_ROUTES is), the
routing page (each provider's circuit, demotion and last hour's figures, the recent health
events) and the health events' audit list. Registered by one import in messaging's admin.

Reads go through messaging.services.provider_health.snapshot(); nothing here writes health.
"""

from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse

from messaging.models import ProviderHealth, ProviderHealthEvent, Route
from messaging.services import provider_health, routing

ROUTING_PERMISSION = "messaging.view_routing"


@admin.register(Route)
class RouteAdmin(admin.ModelAdmin):
    list_display = ("destination", "providers", "client", "updated_at")
    list_filter = ("client",)
    search_fields = ("destination", "providers")
    raw_id_fields = ("client",)


class _ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(ProviderHealthEvent)
class ProviderHealthEventAdmin(_ReadOnly):
    list_display = ("created_at", "provider", "kind", "reason")
    list_filter = ("provider", "kind")
    readonly_fields = ("created_at", "provider", "kind", "reason", "figures")


@admin.register(ProviderHealth)
class RoutingPageAdmin(_ReadOnly):
    """Its changelist is the routing page, behind the view_routing permission."""

    def has_view_permission(self, request, obj=None):
        return request.user.is_active and request.user.has_perm(ROUTING_PERMISSION)

    def has_module_permission(self, request):
        return self.has_view_permission(request)

    def changelist_view(self, request, extra_context=None):
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            table = routing.parse_routes(settings.SMS_ROUTES)
            table_error = ""
        except ValueError as exc:
            table, table_error = {}, str(exc)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Provider routing",
            "providers": provider_health.snapshot(),
            "events": list(ProviderHealthEvent.objects.all()[:50]),
            "settings_routes": [(dest, weights) for dest, weights in table.items()],
            "table_error": table_error,
            "routes": list(Route.objects.select_related("client").order_by("client__name")),
            "can_edit_routes": request.user.has_perm("messaging.change_route"),
        }
        return TemplateResponse(request, "herald/routing.html", context)
