"""Console roles: Django groups named admin, operator and viewer (superusers count as admin).

viewer reads everything in the console; operator also enrolls devices and sends commands;
admin also manages users, tenants and API keys (through the Django admin).
"""

from enum import IntEnum


class Role(IntEnum):
    NONE = 0
    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3


ROLE_GROUPS = {"viewer": Role.VIEWER, "operator": Role.OPERATOR, "admin": Role.ADMIN}


def role_of(user) -> Role:
    if user is None or not getattr(user, "is_authenticated", False):
        return Role.NONE
    if getattr(user, "is_superuser", False):
        return Role.ADMIN
    groups = getattr(user, "groups", None)
    if groups is None:
        return Role.NONE
    names = set(groups.values_list("name", flat=True))
    return max((ROLE_GROUPS[name] for name in names if name in ROLE_GROUPS), default=Role.NONE)


def can_view(user) -> bool:
    return role_of(user) >= Role.VIEWER


def can_operate(user) -> bool:
    return role_of(user) >= Role.OPERATOR
