"""The staff side of clients and API keys: create and deactivate clients, issue a key (its full
value shown once, on the page that creates it, with a copy button; never again), revoke keys
with a confirmation, and see each key's prefix, kind and last use.

Permissions are Django's: the Client model's view/add/change permissions for the client pages,
`messaging.manage_client` to create and revoke keys, and `messaging.view_apikey` (or
manage_client) to see a client's keys. Key actions call messaging.services.clients and are
written to the admin's LogEntry history with the acting user; full keys never reach a log.

Registered from MessagingConfig.ready() (messaging/apps.py), so this module stays separate from
the rest of the admin.
"""

from datetime import UTC

from django import forms
from django.contrib import admin
from django.contrib import messages as flash
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, Q
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from messaging import providers
from messaging.models import ApiKey, Client
from messaging.services import clients

MANAGE_PERMISSION = "messaging.manage_client"


class ProviderChoices:
    """The configured providers, read when a form is built (settings can change in tests)."""

    def __init__(self, blank=False):
        self.blank = blank

    def __iter__(self):
        if self.blank:
            yield "", "Herald's default"
        yield from ((name, name) for name in providers.enabled_names())


class ClientForm(forms.ModelForm):
    default_provider = forms.ChoiceField(choices=ProviderChoices(blank=True), required=False)
    allowed_providers = forms.MultipleChoiceField(
        choices=ProviderChoices(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every enabled provider. Test keys always use the sandbox.",
    )
    owned_numbers = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 40}),
        help_text="One number or sender id per line: inbound SMS to them belong to this client.",
    )

    class Meta:
        model = Client
        fields = [
            "name",
            "slug",
            "send_rate_limit",
            "read_rate_limit",
            "default_provider",
            "default_sender_id",
            "allowed_providers",
            "owned_numbers",
        ]
        help_texts = {
            "send_rate_limit": "Sends (POST) per period, e.g. 300/m. Blank: API_SEND_RATE_LIMIT.",
            "read_rate_limit": "Reads (GET) per period, e.g. 600/m. Blank: API_RATE_LIMIT.",
            "default_sender_id": "Used when a send gives no `from`.",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["owned_numbers"] = "\n".join(self.instance.owned_numbers or [])

    def clean_send_rate_limit(self):
        return clients.validate_rate(self.cleaned_data["send_rate_limit"])

    def clean_read_rate_limit(self):
        return clients.validate_rate(self.cleaned_data["read_rate_limit"])

    def clean_owned_numbers(self):
        lines = self.cleaned_data["owned_numbers"].replace(",", "\n").splitlines()
        return [line.strip() for line in lines if line.strip()]

    def clean(self):
        data = super().clean()
        default, allowed = data.get("default_provider"), data.get("allowed_providers")
        if default and allowed and default not in allowed:
            self.add_error("default_provider", "The default provider must be one it may use.")
        return data


class ApiKeyCreateForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What the key is for, e.g. 'web servers'.")
    kind = forms.ChoiceField(
        choices=ApiKey.Kind.choices,
        initial=ApiKey.Kind.LIVE,
        widget=forms.RadioSelect,
        help_text="A test key's messages always go to the sandbox: no real SMS, no cost.",
    )


def _utc(when) -> str:
    return timezone.localtime(when, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class ApiKeyInline(admin.TabularInline):
    """A client's keys, read-only: keys are created and revoked through their own pages."""

    model = ApiKey
    extra = 0
    can_delete = False
    show_change_link = False
    fields = ["prefix_display", "name", "kind", "created", "created_by", "last_used", "state",
              "revoke_link"]  # fmt: skip
    readonly_fields = fields
    verbose_name_plural = "API keys"

    def get_fields(self, request, obj=None):
        if request.user.has_perm(MANAGE_PERMISSION):
            return self.fields
        return [f for f in self.fields if f != "revoke_link"]

    def has_view_permission(self, request, obj=None):
        return super().has_view_permission(request, obj) or request.user.has_perm(MANAGE_PERMISSION)

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="key")
    def prefix_display(self, key):
        return format_html("<code>{}…</code>", key.prefix)

    @admin.display(description="created")
    def created(self, key):
        return _utc(key.created_at)

    @admin.display(description="last used")
    def last_used(self, key):
        # Recorded at most once a minute per key (messaging.services.clients).
        return _utc(key.last_used_at) if key.last_used_at else "never"

    @admin.display(description="state")
    def state(self, key):
        if key.revoked_at:
            return format_html('<span class="herald-key-revoked">revoked {}</span>',
                               _utc(key.revoked_at))  # fmt: skip
        return "active"

    @admin.display(description="")
    def revoke_link(self, key):
        if key.revoked_at:
            return ""
        url = reverse("admin:messaging_client_revoke_key", args=[key.client_id, key.pk])
        return format_html('<a class="button" href="{}">Revoke…</a>', url)


@admin.register(Client)
class ClientAdmin(admin.ModelAdmin):
    form = ClientForm
    change_form_template = "herald/clients/client_change_form.html"
    list_display = ["name", "slug", "is_active", "active_keys", "created_at"]
    list_filter = ["is_active"]
    search_fields = ["name", "slug"]
    readonly_fields = ["is_active", "created", "updated", "callback_url"]
    fieldsets = [
        (None, {"fields": ["name", "slug", "is_active"]}),
        ("Sending", {"fields": ["default_provider", "allowed_providers", "default_sender_id",
                                "owned_numbers"]}),
        ("Rate limits", {"fields": ["send_rate_limit", "read_rate_limit"]}),
        ("Status callbacks", {"fields": ["callback_url"], "description":
            "Set with <code>manage.py set_callback SLUG URL</code>, which also creates the "
            "signing secret and shows it once."}),
        ("History", {"fields": ["created", "updated"]}),
    ]  # fmt: skip
    prepopulated_fields = {"slug": ["name"]}
    inlines = [ApiKeyInline]
    actions = ["deactivate_clients", "reactivate_clients"]

    def get_readonly_fields(self, request, obj=None):
        # The slug is the client's id for commands and scripts: fixed once created.
        return [*self.readonly_fields, "slug"] if obj else self.readonly_fields

    def get_prepopulated_fields(self, request, obj=None):
        return {} if obj else self.prepopulated_fields

    def get_inlines(self, request, obj):
        return self.inlines if obj else []

    def has_delete_permission(self, request, obj=None):
        # Deactivate instead: a client's messages are kept (and protect it), and a deleted
        # client's slug could be reused by another.
        return False

    @admin.display(description="created")
    def created(self, client):
        return _utc(client.created_at) if client.created_at else "-"

    @admin.display(description="updated")
    def updated(self, client):
        return _utc(client.updated_at) if client.updated_at else "-"

    def get_queryset(self, request):
        # The list's key count in the same query, not one query per client.
        active = Count("api_keys", filter=Q(api_keys__revoked_at__isnull=True))
        return super().get_queryset(request).annotate(active_key_count=active)

    @admin.display(description="active keys", ordering="active_key_count")
    def active_keys(self, client):
        return client.active_key_count

    @admin.action(description="Deactivate selected clients (their keys stop working)",
                  permissions=["change"])  # fmt: skip
    def deactivate_clients(self, request, queryset):
        for client in queryset:
            clients.deactivate(client)
            self.log_change(request, client, "Deactivated the client.")
        flash.success(request, f"Deactivated {len(queryset)} client(s).")

    @admin.action(description="Reactivate selected clients", permissions=["change"])
    def reactivate_clients(self, request, queryset):
        for client in queryset:
            clients.reactivate(client)
            self.log_change(request, client, "Reactivated the client.")
        flash.success(request, f"Reactivated {len(queryset)} client(s).")

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "can_manage_keys": request.user.has_perm(MANAGE_PERMISSION),
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("<path:object_id>/keys/add/", wrap(self.create_key_view),
                 name="messaging_client_create_key"),
            path("<path:object_id>/keys/<int:key_id>/revoke/", wrap(self.revoke_key_view),
                 name="messaging_client_revoke_key"),
        ] + super().get_urls()  # fmt: skip

    # --- Key pages -----------------------------------------------------------------------------

    def _managed_client(self, request, object_id) -> Client:
        if not request.user.has_perm(MANAGE_PERMISSION):
            raise PermissionDenied
        return get_object_or_404(Client, pk=unquote(object_id))

    def _context(self, request, client, **extra):
        return {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "client": client,
            "client_url": reverse("admin:messaging_client_change", args=[client.pk]),
            **extra,
        }

    def create_key_view(self, request, object_id):
        """GET: the form. POST: issue the key and show it, once. The page is not cached
        (admin_view adds never_cache) and
        replaces its own history entry with the client's page, so reloading or going back shows
        the client (and its new key's prefix), never the key again and never a second key."""
        client = self._managed_client(request, object_id)
        if not client.is_active:
            flash.error(request, "This client is inactive: reactivate it before adding keys.")
            return HttpResponseRedirect(reverse("admin:messaging_client_change", args=[client.pk]))
        form = ApiKeyCreateForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                issued = clients.create_api_key(
                    client,
                    name=form.cleaned_data["name"],
                    kind=form.cleaned_data["kind"],
                    created_by=request.user,
                )
            except ValidationError as exc:
                form.add_error(None, exc)
            else:
                self.log_change(
                    request, client,
                    f"Created {issued.api_key.kind} API key {issued.api_key.prefix}… "
                    f"({issued.api_key.name}).",
                )  # fmt: skip
                return TemplateResponse(
                    request,
                    "herald/clients/key_created.html",
                    self._context(request, client, title="API key created", issued=issued),
                )
        return TemplateResponse(
            request,
            "herald/clients/key_create.html",
            self._context(request, client, title=f"New API key for {client}", form=form),
        )

    def revoke_key_view(self, request, object_id, key_id):
        client = self._managed_client(request, object_id)
        api_key = get_object_or_404(ApiKey, pk=key_id, client=client)
        client_url = reverse("admin:messaging_client_change", args=[client.pk])
        if api_key.revoked_at:
            flash.info(request, f"API key {api_key.prefix}… was already revoked.")
            return HttpResponseRedirect(client_url)
        if request.method == "POST":
            clients.revoke_api_key(api_key)
            self.log_change(request, client, f"Revoked API key {api_key.prefix}….")
            flash.success(request, f"Revoked API key {api_key.prefix}… ({api_key.name}).")
            return HttpResponseRedirect(client_url)
        return TemplateResponse(
            request,
            "herald/clients/key_revoke.html",
            self._context(request, client, title="Revoke API key", api_key=api_key),
        )
