"""Media-token renewal: fresh Agora credentials pushed to each side's active device.

The tokens are built locally by agora-token-builder; Agora's cloud, which would check them, cannot
be reached here and is not involved.
"""

from datetime import timedelta

import pytest
from django.utils import timezone

from calls import devices, services
from calls.models import CallEvent, UserEvent
from calls.tasks import media_renewal_task

pytestmark = pytest.mark.django_db


@pytest.fixture
def agora(settings):
    settings.AGORA_APP_ID = "0" * 32
    settings.AGORA_APP_CERTIFICATE = "1" * 32
    settings.AGORA_TOKEN_TTL_S = 3600
    return settings


def accepted_call(alice, bob):
    devices.device_connect(user=bob, device_id="bob-1", channel_name="chan-bob")
    started = services.call_start(caller=alice, device_id="alice-1", callee_id=bob.pk,
                                  call_type="video")
    reply = services.call_accept(user=bob, device_id="bob-1", call_id=started.call.call_id)
    return started, reply


def test_accept_hands_out_agora_credentials(agora, alice, bob):
    started, reply = accepted_call(alice, bob)
    for media, user in ((started.media, alice), (reply["media"], bob)):
        assert (media["engine"], media["app_id"], media["channel"], media["uid"]) == (
            "agora", "0" * 32, started.call.channel, user.pk)
        assert media["token"].startswith("006")


def test_renewal_pushes_fresh_credentials_to_each_active_device(agora, alice, bob):
    started, _ = accepted_call(alice, bob)
    later = timezone.now() + timedelta(minutes=59)

    assert services.call_renew_media(call_id=started.call.call_id, now=later) is True

    pushed = {row.user_id: row for row in UserEvent.objects.filter(frame__name="call.media")}
    assert set(pushed) == {alice.pk, bob.pk}
    assert (pushed[alice.pk].only_device, pushed[bob.pk].only_device) == ("alice-1", "bob-1")
    frame = pushed[bob.pk].frame
    assert frame["expires_at_ms"] == (int(later.timestamp()) + 3600) * 1000
    assert frame["media"]["token"].startswith("006")
    assert CallEvent.objects.filter(call=started.call, kind="media_renewed").count() == 1


def test_renewal_of_an_ended_call_does_nothing(agora, alice, bob):
    started, _ = accepted_call(alice, bob)
    services.call_hangup(user=alice, device_id="alice-1", call_id=started.call.call_id)
    before = UserEvent.objects.count()

    assert media_renewal_task(started.call.call_id) is False
    assert UserEvent.objects.count() == before


def test_without_agora_there_is_nothing_to_renew(alice, bob):
    started, reply = accepted_call(alice, bob)
    assert reply["media"] == {"engine": "webrtc", "ice_servers": []}
    assert services.call_renew_media(call_id=started.call.call_id) is False
    assert not UserEvent.objects.filter(frame__name="call.media").exists()
