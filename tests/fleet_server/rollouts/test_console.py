"""Console pages: deployments list, the deploy form (operators only), the live target table, roll back."""

import pytest
from django.test import Client

from fleet_server.devices.models import Command
from fleet_server.rollouts import services
from fleet_server.rollouts.models import Deployment
from tests.fleet_server.rollouts.conftest import keyed_device


@pytest.fixture
def operator_web(operator):
    client = Client()
    client.force_login(operator)
    return client


@pytest.fixture
def viewer_web(viewer):
    client = Client()
    client.force_login(viewer)
    return client


def test_an_operator_deploys_from_the_form(operator_web, package, boxes):
    # given: the form for this package lists the tenant's devices as checkboxes
    page = operator_web.get(f"/deployments/new/?package={package.pk}")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'type="checkbox"' in html and "box-a" in html and "box-b" in html

    # when
    box_a = boxes[0][0]
    response = operator_web.post(
        "/deployments/new/", {"package": package.pk, "devices": [box_a.pk], "observe_s": "10", "note": "night fix"}
    )

    # then
    deployment = Deployment.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/deployments/{deployment.pk}/"
    assert [t.device for t in deployment.targets.all()] == [box_a]
    assert (deployment.observe_s, deployment.note) == (10.0, "night fix")


def test_the_form_without_a_package_asks_for_one_and_refuses_bad_input(operator_web, package, boxes):
    assert "Choose devices" in operator_web.get("/deployments/new/").content.decode()
    response = operator_web.post(
        "/deployments/new/", {"package": package.pk, "devices": [boxes[0][0].pk], "scene_configs": "[{"}
    )
    assert response.status_code == 422
    assert "not JSON" in response.content.decode()
    assert operator_web.post("/deployments/new/", {"package": package.pk}).status_code == 422
    assert not Command.objects.exists()


def test_another_tenants_device_is_not_offered(operator_web, package, boxes, other_site):
    rival, _ = keyed_device(other_site, "rival-box")
    assert "rival-box" not in operator_web.get(f"/deployments/new/?package={package.pk}").content.decode()
    response = operator_web.post("/deployments/new/", {"package": package.pk, "devices": [rival.pk]})
    assert response.status_code == 422
    assert not Command.objects.exists()


def test_viewers_see_deployments_but_cannot_deploy_or_roll_back(viewer_web, package, boxes):
    deployment = services.deploy(package, [boxes[0][0]])
    listing = viewer_web.get("/deployments/").content.decode()
    assert f"/deployments/{deployment.pk}/" in listing and "New deployment" not in listing
    detail = viewer_web.get(f"/deployments/{deployment.pk}/").content.decode()
    assert "box-a" in detail and "Roll back" not in detail
    assert viewer_web.get(f"/deployments/new/?package={package.pk}").status_code == 403
    assert viewer_web.post(f"/deployments/{deployment.pk}/rollback/{boxes[0][0].pk}/").status_code == 403
    assert not Command.objects.filter(name="rollback").exists()


def test_the_detail_table_polls_until_every_target_is_final(viewer_web, package, boxes):
    deployment = services.deploy(package, [boxes[0][0]])
    command = deployment.targets.get().command

    page = viewer_web.get(f"/deployments/{deployment.pk}/").content.decode()
    assert 'hx-trigger="every 2s"' in page

    Command.objects.filter(pk=command.pk).update(state="downloading", progress=62.0)
    part = viewer_web.get(f"/deployments/{deployment.pk}/?part=targets", HTTP_HX_REQUEST="true").content.decode()
    assert part.startswith('<div id="targets"') and 'value="62.0"' in part and "Downloading" in part

    Command.objects.filter(pk=command.pk).update(state="failed", progress=None, reason="self-test mismatch")
    part = viewer_web.get(f"/deployments/{deployment.pk}/?part=targets", HTTP_HX_REQUEST="true").content.decode()
    assert "self-test mismatch" in part and "hx-trigger" not in part


def test_an_operator_rolls_a_device_back_from_the_detail_page(operator_web, package, boxes):
    deployment = services.deploy(package, [boxes[0][0]])
    assert "Roll back" in operator_web.get(f"/deployments/{deployment.pk}/").content.decode()

    response = operator_web.post(f"/deployments/{deployment.pk}/rollback/{boxes[0][0].pk}/", {"reason": "too slow"})

    assert response.status_code == 302
    target = deployment.targets.get()
    assert target.rollback_command.args == {"reason": "too slow"}
    assert operator_web.post(f"/deployments/{deployment.pk}/rollback/{boxes[1][0].pk}/").status_code == 404


def test_a_packages_page_offers_operators_a_deploy_button(operator_web, viewer_web, package):
    link = f"/deployments/new/?package={package.pk}"
    assert link in operator_web.get(f"/models/packages/{package.pk}/").content.decode()
    assert link not in viewer_web.get(f"/models/packages/{package.pk}/").content.decode()
