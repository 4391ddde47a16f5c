"""API-key authentication for business units: ``Authorization: Api-Key sp_<prefix>_<secret>``."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from fleet_server.tenants.services import authenticate_api_key


class ApiKeyUser:
    """The principal of a request made with a tenant's API key (not a console user)."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False

    def __init__(self, api_key):
        self.api_key = api_key
        self.tenant = api_key.tenant
        self.pk = f"api-key:{api_key.prefix}"

    def __str__(self) -> str:
        return f"API key {self.api_key.prefix} of {self.tenant}"


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Api-Key"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        keyword, _, raw_key = header.partition(" ")
        if keyword != self.keyword:
            return None
        if not raw_key.strip():
            raise exceptions.AuthenticationFailed("the Api-Key header has no key")
        api_key = authenticate_api_key(raw_key)
        if api_key is None:
            raise exceptions.AuthenticationFailed("invalid or revoked API key")
        return ApiKeyUser(api_key), api_key

    def authenticate_header(self, request) -> str:
        return self.keyword


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = ApiKeyAuthentication
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Api-Key sp_<prefix>_<secret>`, issued per business unit with `manage.py create_api_key`.",
        }
