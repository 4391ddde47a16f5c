import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django.contrib.auth.models import Group, User
from rest_framework.test import APIClient

from fleet_server.devices.models import Device, Site
from fleet_server.devices.services import mosquitto_password_hash
from fleet_server.tenants.models import Tenant
from fleet_server.tenants.services import issue_api_key


def new_public_key() -> str:
    raw = X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(raw).decode()


@pytest.fixture
def tenant(db):
    return Tenant.objects.create(name="Acme Parks", slug="acme")


@pytest.fixture
def other_tenant(db):
    return Tenant.objects.create(name="Rival Parks", slug="rival")


@pytest.fixture
def site(tenant):
    return Site.objects.create(tenant=tenant, name="North Park", slug="north", time_zone="Europe/Berlin")


@pytest.fixture
def other_site(other_tenant):
    return Site.objects.create(tenant=other_tenant, name="Rival Lot", slug="rival-lot")


def make_device(site, name="box-1", kind="smart_box_cpu", **fields) -> Device:
    return Device.objects.create(
        name=name, kind=kind, site=site, public_key=new_public_key(), mqtt_username=f"user-{name}-{site.slug}",
        mqtt_password_hash=mosquitto_password_hash("x"), **fields,
    )  # fmt: skip


@pytest.fixture
def device(site):
    return make_device(site)


def _user_with_role(username: str, role: str) -> User:
    user = User.objects.create_user(username=username, password="pw-" + username)
    user.groups.add(Group.objects.get_or_create(name=role)[0])
    return user


@pytest.fixture
def operator(db):
    return _user_with_role("olga", "operator")


@pytest.fixture
def viewer(db):
    return _user_with_role("victor", "viewer")


@pytest.fixture
def operator_client(operator):
    client = APIClient()
    client.force_login(operator)
    return client


@pytest.fixture
def viewer_client(viewer):
    client = APIClient()
    client.force_login(viewer)
    return client


@pytest.fixture
def api_key_client(tenant):
    _, key = issue_api_key(tenant, "billing")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    return client
