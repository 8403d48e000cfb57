"""Publishing journeys and operator commands through the control topics."""

import shutil
from pathlib import Path

import pytest

from orchestrator.config import Settings
from orchestrator.control import publish_journeys, read_control_plane, send_command
from orchestrator.engine.errors import JourneyError

pytestmark = pytest.mark.kafka

JOURNEYS = Path(__file__).resolve().parents[2] / "journeys"


def test_publish_list_and_new_versions(settings: Settings, tmp_path: Path) -> None:
    results = publish_journeys(settings, [JOURNEYS])
    assert {status for _, status in results} == {"published"}
    plane = read_control_plane(settings)
    shipped = {p.stem for p in JOURNEYS.glob("*.yaml")} - {"policy"}
    assert set(plane.journeys) == shipped
    assert plane.problems == []
    assert plane.rules.latest()  # decide() sees them

    # Publishing the same files again changes nothing.
    again = publish_journeys(settings, [JOURNEYS])
    assert {status for _, status in again} == {"unchanged"}

    # A changed file under the same version is refused: customers in flight rely on it.
    work = tmp_path / "j"
    work.mkdir()
    cart = work / "cart_abandonment.yaml"
    shutil.copy(JOURNEYS / "cart_abandonment.yaml", cart)
    cart.write_text(cart.read_text().replace("priority: 70", "priority: 71"))
    with pytest.raises(
        JourneyError,
        match="journey 'cart_abandonment' version 1 is already published with different content",
    ):
        publish_journeys(settings, [cart])

    # As version 2 it is published next to version 1.
    cart.write_text(cart.read_text().replace("version: 1", "version: 2"))
    assert [s for _, s in publish_journeys(settings, [cart])] == ["published"]
    plane = read_control_plane(settings)
    assert sorted(plane.journeys["cart_abandonment"]) == [1, 2]
    assert plane.rules.version("cart_abandonment", 1) is not None
    assert next(j for j in plane.rules.latest() if j.id == "cart_abandonment").version == 2


def test_invalid_file_publishes_nothing(settings: Settings, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "id: bad\nversion: 1\nname: Bad\ncategory: marketing\nentry: {event: nope}\nsteps: []\n"
    )
    with pytest.raises(JourneyError, match=r"bad\.yaml"):
        publish_journeys(settings, [JOURNEYS, bad])
    assert read_control_plane(settings).journeys == {}


def test_pause_resume_and_kill_switches_fold_in_order(settings: Settings) -> None:
    publish_journeys(settings, [JOURNEYS])
    send_command(settings, "pause_journey", "cart_abandonment")
    send_command(settings, "kill_channel", "sms")
    plane = read_control_plane(settings)
    assert plane.rules.is_paused("cart_abandonment")
    assert plane.rules.kill_switch("welcome", "sms") == "channel:sms"

    send_command(settings, "resume_journey", "cart_abandonment")
    send_command(settings, "revive_channel", "sms")
    send_command(settings, "kill_all", None)
    plane = read_control_plane(settings)
    assert not plane.rules.is_paused("cart_abandonment")
    assert plane.rules.kill_switch("welcome", "email") == "global"
