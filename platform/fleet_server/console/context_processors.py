from fleet_server.roles import can_operate, role_of


def roles(request) -> dict:
    user = getattr(request, "user", None)
    return {"user_role": role_of(user).name.lower(), "can_operate": can_operate(user)}
