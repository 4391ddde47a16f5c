"""Who may do what through the API: console users by role, business units read their own parks."""

from rest_framework import permissions

from fleet_server.api.authentication import ApiKeyUser
from fleet_server.roles import can_operate, can_view


class IsConsoleUserOrTenantReader(permissions.BasePermission):
    message = "viewers read, operators change; API keys read their own tenant's data"

    def has_permission(self, request, view) -> bool:
        user = request.user
        if isinstance(user, ApiKeyUser):
            return request.method in permissions.SAFE_METHODS
        if request.method in permissions.SAFE_METHODS:
            return can_view(user)
        return can_operate(user)


class IsOperator(permissions.BasePermission):
    message = "only console operators may do this"

    def has_permission(self, request, view) -> bool:
        return not isinstance(request.user, ApiKeyUser) and can_operate(request.user)
