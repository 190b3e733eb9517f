"""The API's only authentication: a client's API key, as `Authorization: Bearer <key>` (or
`Authorization: Token <key>`, the header the per-user DRF tokens used).

No session authentication: a staff user's admin cookie is no way into the API (issue 10,
item 8). An unknown or revoked key, or a key of an inactive client, is a 401 with a
`WWW-Authenticate: Bearer` header.

After authentication `request.auth` is the ApiKey and `request.user` a `ClientUser` standing for
its client, so `request.auth.client` (or `request.user.client`) is the caller.
"""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from messaging.services import clients

SCHEMES = ("bearer", "token")


class ClientUser:
    """What DRF sees as the user of a key-authenticated request: authenticated, not staff, no
    Django permissions. Never a Django user, so no admin permission can leak into the API."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False
    pk = id = None

    def __init__(self, api_key):
        self.api_key = api_key
        self.client = api_key.client

    def __str__(self):
        return f"client:{self.client.slug}"

    def has_perm(self, perm, obj=None):
        return False

    def get_username(self):
        return str(self)


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower().decode(errors="replace") not in SCHEMES:
            return None  # no credentials: IsAuthenticated answers 401 with our header
        if len(header) != 2:
            raise exceptions.AuthenticationFailed(
                "Invalid Authorization header: use 'Bearer <API key>'."
            )
        try:
            key = header[1].decode()
        except UnicodeError:
            raise exceptions.AuthenticationFailed("Invalid API key.") from None
        api_key = clients.authenticate(key)
        if api_key is None:
            # One answer for unknown, revoked and inactive: no oracle for which keys exist.
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
        # For the request log line (messaging/logging.py): who called, by the key's prefix.
        django_request = getattr(request, "_request", request)
        django_request.herald_client = api_key.client.slug
        django_request.herald_api_key = api_key.prefix
        return ClientUser(api_key), api_key

    def authenticate_header(self, request):
        return f'{self.keyword} realm="api"'


class ApiKeyScheme(OpenApiAuthenticationExtension):
    """Swagger UI's "Authorize" button and the schema's security scheme: HTTP bearer."""

    target_class = "messaging.api.authentication.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A client API key: `Authorization: Bearer hk_live_...` (or "
            "`hk_test_...`, which always sends through the sandbox). `Token <key>` is "
            "accepted too.",
        }
