"""The calls admin, through its pages: who may see it, what the call list and its filters and
search return, the read-only detail page with its timeline and timings, and the end-calls action.

Calls are made through the services with the time passed in; nothing is published (no test here
commits, so on-commit publication and timers never run).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser

import pytest
from django.contrib.admin.models import LogEntry
from django.utils import timezone as django_timezone

from calls import devices, services
from calls.domain.machine import CallType, Milestone
from calls.models import CallEvent, CallSession, Profile, UserEvent
from tests.support import make_user

pytestmark = pytest.mark.django_db

T0 = datetime(2025, 3, 10, 12, 0, tzinfo=timezone.utc)
CHANGELIST = "/admin/calls/callsession/"
LOGIN = "/admin/login/"


def at(*, minutes: float = 0, seconds: float = 0, days: float = 0) -> datetime:
    return T0 + timedelta(days=days, minutes=minutes, seconds=seconds)


def change_url(call: CallSession) -> str:
    return f"{CHANGELIST}{call.pk}/change/"


def delete_url(call: CallSession) -> str:
    return f"{CHANGELIST}{call.pk}/delete/"


# ---- reading pages --------------------------------------------------------------------------


class _Cells(HTMLParser):
    """The whitespace-normalised text of every element carrying ``css_class``, in page order."""

    def __init__(self, css_class: str):
        super().__init__()
        self.css_class = css_class
        self.tag: str | None = None
        self.depth = 0
        self.parts: list[str] = []
        self.cells: list[str] = []

    def handle_starttag(self, tag, attrs):
        if self.depth:
            self.depth += tag == self.tag
            return
        classes = (dict(attrs).get("class") or "").split()
        if self.css_class in classes:
            self.tag, self.depth, self.parts = tag, 1, []

    def handle_endtag(self, tag):
        if self.depth and tag == self.tag:
            self.depth -= 1
            if not self.depth:
                self.cells.append(" ".join(" ".join(self.parts).split()))

    def handle_data(self, data):
        if self.depth:
            self.parts.append(data)


def cells(response, css_class: str) -> list[str]:
    parser = _Cells(css_class)
    parser.feed(response.content.decode())
    return parser.cells


class _Names(HTMLParser):
    """The ``name`` of every form control on a page."""

    def __init__(self):
        super().__init__()
        self.names: list[str] = []

    def handle_starttag(self, tag, attrs):
        name = dict(attrs).get("name")
        if tag in ("input", "select", "textarea", "button") and name:
            self.names.append(name)


def control_names(response) -> list[str]:
    parser = _Names()
    parser.feed(response.content.decode())
    return parser.names


class _Links(HTMLParser):
    """Every link on a page: its text and its href."""

    def __init__(self):
        super().__init__()
        self.href: str | None = None
        self.parts: list[str] = []
        self.links: dict[str, str] = {}

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.href, self.parts = dict(attrs).get("href"), []

    def handle_endtag(self, tag):
        if tag == "a" and self.href is not None:
            self.links[" ".join("".join(self.parts).split())] = self.href
            self.href = None

    def handle_data(self, data):
        if self.href is not None:
            self.parts.append(data)


def links(response) -> dict[str, str]:
    parser = _Links()
    parser.feed(response.content.decode())
    return parser.links


class _Options(HTMLParser):
    """The options of the ``<select name=...>`` on a page: (value, text)."""

    def __init__(self, select_name: str):
        super().__init__()
        self.select_name = select_name
        self.inside = False
        self.value: str | None = None
        self.options: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        if tag == "select":
            self.inside = dict(attrs).get("name") == self.select_name
        elif tag == "option" and self.inside:
            self.value = dict(attrs).get("value", "")
            self.options.append((self.value, ""))

    def handle_endtag(self, tag):
        if tag == "select":
            self.inside = False

    def handle_data(self, data):
        if self.inside and self.options and data.strip():
            value, text = self.options[-1]
            self.options[-1] = (value, (text + data).strip())


def action_choices(response) -> list[tuple[str, str]]:
    parser = _Options("action")
    parser.feed(response.content.decode())
    return parser.options


def listed_call_ids(response) -> set[str]:
    assert response.status_code == 200
    return set(cells(response, "field-call_id"))


# ---- making calls through the services ------------------------------------------------------


def online(user, now: datetime) -> str:
    device_id = f"{user.username}-phone"
    devices.device_connect(user=user, device_id=device_id, channel_name=f"test.{device_id}",
                           now=now)
    return device_id


def dial(caller, callee, now: datetime, call_type: CallType = CallType.video) -> CallSession:
    return services.call_start(caller=caller, device_id=f"{caller.username}-phone",
                               callee_id=callee.pk, call_type=call_type, now=now).call


def accept(call: CallSession, callee, now: datetime) -> None:
    services.call_accept(user=callee, device_id=f"{callee.username}-phone",
                         call_id=call.call_id, now=now)


def first_frame(call: CallSession, user, now: datetime) -> None:
    services.call_report_media(user=user, device_id=f"{user.username}-phone",
                               call_id=call.call_id, milestone=Milestone.first_remote_frame,
                               now=now)


def connected_call(caller, callee, start: datetime,
                   call_type: CallType = CallType.video) -> CallSession:
    online(callee, start)
    call = dial(caller, callee, start, call_type)
    accept(call, callee, start + timedelta(seconds=2))
    first_frame(call, caller, start + timedelta(seconds=3))
    first_frame(call, callee, start + timedelta(seconds=3, milliseconds=500))
    return call


def fresh(call: CallSession) -> CallSession:
    return CallSession.objects.get(pk=call.pk)


@pytest.fixture
def calls(db):
    """One call per phase and several end reasons, between users with distinct names.

    ringing: alice->bob (video); busy: carol->bob (audio); offline: carol->dave (video);
    hangup: carol->frank (video, connected then hung up); accepted: dave->erin (audio);
    connected: carol->frank (video).
    """
    alice = make_user("alice", display_name="Alice Liddell")
    bob = make_user("bob", display_name="Robert Paulson")
    carol = make_user("carol", display_name="Carol Danvers")
    dave = make_user("dave", display_name="Dave Bowman")
    erin = make_user("erin", display_name="Erin Brockovich")
    frank = make_user("frank", display_name="Francis Drake")
    online(bob, at())
    ringing = dial(alice, bob, at())
    busy = dial(carol, bob, at(minutes=1), CallType.audio)
    offline = dial(carol, dave, at(minutes=2))
    hangup = connected_call(carol, frank, at(minutes=3))
    services.call_hangup(user=carol, device_id="carol-phone", call_id=hangup.call_id,
                         now=at(minutes=4))
    online(erin, at(minutes=5))
    accepted = dial(dave, erin, at(minutes=5), CallType.audio)
    accept(accepted, erin, at(minutes=5, seconds=1))
    connected = connected_call(carol, frank, at(minutes=6))
    made = {"ringing": ringing, "busy": busy, "offline": offline, "hangup": hangup,
            "accepted": accepted, "connected": connected}
    return {name: fresh(call) for name, call in made.items()}


def ids(calls: dict, *names: str) -> set[str]:
    return {calls[name].call_id for name in names}


def test_the_scenario_makes_the_calls_it_names(calls):
    # given / when the scenario ran
    # then
    assert {name: (call.phase, call.end_reason, call.call_type)
            for name, call in calls.items()} == {
        "ringing": ("ringing", "", "video"),
        "busy": ("ended", "busy", "audio"),
        "offline": ("ended", "offline", "video"),
        "hangup": ("ended", "hangup", "video"),
        "accepted": ("accepted", "", "audio"),
        "connected": ("connected", "", "video"),
    }


# ---- who may see the admin ------------------------------------------------------------------


@pytest.mark.parametrize("page", ["changelist", "change"])
def test_an_anonymous_visitor_is_sent_to_the_admin_login(client, calls, page):
    # given
    url = CHANGELIST if page == "changelist" else change_url(calls["ringing"])
    # when
    response = client.get(url)
    # then
    assert response.status_code == 302
    assert response["Location"] == f"{LOGIN}?next={url}"


@pytest.mark.parametrize("page", ["changelist", "change"])
def test_a_user_who_is_not_staff_is_refused(client, calls, page):
    # given a signed-in participant of the calls who is not staff
    client.force_login(calls["ringing"].caller)
    url = CHANGELIST if page == "changelist" else change_url(calls["ringing"])
    # when
    response = client.get(url)
    # then
    assert response.status_code == 302
    assert response["Location"] == f"{LOGIN}?next={url}"


def test_a_user_who_is_not_staff_cannot_end_a_call(client, calls):
    # given
    client.force_login(calls["ringing"].caller)
    before = CallSession.objects.values().get(pk=calls["ringing"].pk)
    events, timeline = UserEvent.objects.count(), CallEvent.objects.count()
    # when
    response = client.post(CHANGELIST, {"action": "end_calls",
                                        "_selected_action": [calls["ringing"].pk]})
    # then nothing changed
    assert response.status_code == 302
    assert response["Location"] == f"{LOGIN}?next={CHANGELIST}"
    assert CallSession.objects.values().get(pk=calls["ringing"].pk) == before
    assert (UserEvent.objects.count(), CallEvent.objects.count()) == (events, timeline)


# ---- the call list: filters and search ------------------------------------------------------


def test_the_call_list_shows_every_call(staff_client, calls):
    # given / when
    response = staff_client.get(CHANGELIST)
    # then
    assert listed_call_ids(response) == ids(calls, *calls)


@pytest.mark.parametrize(("query", "expected"), [
    pytest.param("phase__exact=ringing", {"ringing"}, id="phase-ringing"),
    pytest.param("phase__exact=accepted", {"accepted"}, id="phase-accepted"),
    pytest.param("phase__exact=connected", {"connected"}, id="phase-connected"),
    pytest.param("phase__exact=ended", {"busy", "offline", "hangup"}, id="phase-ended"),
    pytest.param("end_reason__exact=busy", {"busy"}, id="end-busy"),
    pytest.param("end_reason__exact=offline", {"offline"}, id="end-offline"),
    pytest.param("end_reason__exact=hangup", {"hangup"}, id="end-hangup"),
    pytest.param("end_reason__exact=timeout", set(), id="end-timeout-none"),
    pytest.param("call_type__exact=audio", {"busy", "accepted"}, id="type-audio"),
    pytest.param("call_type__exact=video", {"ringing", "offline", "hangup", "connected"},
                 id="type-video"),
    pytest.param("phase__exact=ended&call_type__exact=video", {"offline", "hangup"},
                 id="phase-and-type"),
])
def test_each_filter_lists_exactly_its_calls(staff_client, calls, query, expected):
    # given / when
    response = staff_client.get(f"{CHANGELIST}?{query}")
    # then
    assert listed_call_ids(response) == ids(calls, *expected)


@pytest.mark.parametrize(("term", "expected"), [
    pytest.param("alice", {"ringing"}, id="caller-username"),
    pytest.param("bob", {"ringing", "busy"}, id="callee-username"),
    pytest.param("Paulson", {"ringing", "busy"}, id="callee-display-name"),
    pytest.param("danvers", {"busy", "offline", "hangup", "connected"},
                 id="caller-display-name-any-case"),
    pytest.param("Brockovich", {"accepted"}, id="callee-display-name-only"),
    pytest.param("nobody-by-that-name", set(), id="no-match"),
])
def test_search_by_username_or_display_name_lists_exactly_their_calls(staff_client, calls,
                                                                       term, expected):
    # given / when
    response = staff_client.get(CHANGELIST, {"q": term})
    # then
    assert listed_call_ids(response) == ids(calls, *expected)


@pytest.mark.parametrize("name", ["ringing", "accepted", "hangup"])
def test_search_by_call_id_lists_exactly_that_call(staff_client, calls, name):
    # given / when
    response = staff_client.get(CHANGELIST, {"q": calls[name].call_id})
    # then
    assert listed_call_ids(response) == {calls[name].call_id}


@pytest.fixture
def calls_on_three_days(db):
    """alice->bob on 9, 10 and 11 March 2025 at noon UTC, each cancelled a minute later."""
    alice, bob = make_user("alice"), make_user("bob")
    made = {}
    for day in (-1, 0, 1):
        online(bob, at(days=day))
        call = dial(alice, bob, at(days=day))
        services.call_cancel(user=alice, device_id="alice-phone", call_id=call.call_id,
                             now=at(days=day, minutes=1))
        made[day] = call
    return made


def test_the_created_date_filter_lists_the_calls_of_that_day(staff_client, calls_on_three_days):
    # given / when
    response = staff_client.get(CHANGELIST, {"created_at__gte": "2025-03-10 00:00:00+00:00",
                                             "created_at__lt": "2025-03-11 00:00:00+00:00"})
    # then
    assert listed_call_ids(response) == {calls_on_three_days[0].call_id}


def test_the_date_drill_down_lists_the_calls_of_that_day(staff_client, calls_on_three_days):
    # given / when
    response = staff_client.get(CHANGELIST, {"created_at__year": "2025",
                                             "created_at__month": "3",
                                             "created_at__day": "11"})
    # then
    assert listed_call_ids(response) == {calls_on_three_days[1].call_id}


def test_the_past_7_days_filter_link_lists_recent_calls_only(staff_client):
    # given a call an hour ago and one thirty days ago
    alice, bob = make_user("alice"), make_user("bob")
    now = django_timezone.now()
    old_start = now - timedelta(days=30)
    online(bob, old_start)
    old = dial(alice, bob, old_start)
    services.call_cancel(user=alice, device_id="alice-phone", call_id=old.call_id,
                         now=old_start + timedelta(seconds=5))
    online(bob, now - timedelta(hours=1))
    recent = dial(alice, bob, now - timedelta(hours=1))
    link = links(staff_client.get(CHANGELIST))["Past 7 days"]
    # when following the filter's own link
    response = staff_client.get(CHANGELIST + link)
    # then
    assert listed_call_ids(response) == {recent.call_id}


# ---- the detail page ------------------------------------------------------------------------


@pytest.fixture
def finished_call(db):
    """alice calls bob at T0: delivered +0.5 s, accepted +2 s, frames +3 s and +3.5 s, alice
    hangs up at +60 s."""
    alice, bob = make_user("alice"), make_user("bob")
    online(bob, at())
    call = dial(alice, bob, at())
    services.call_mark_delivered(call_id=call.call_id, device_id="bob-phone",
                                 now=at(seconds=0.5))
    accept(call, bob, at(seconds=2))
    first_frame(call, alice, at(seconds=3))
    first_frame(call, bob, at(seconds=3.5))
    services.call_hangup(user=alice, device_id="alice-phone", call_id=call.call_id,
                         now=at(seconds=60))
    return fresh(call)


def test_the_detail_page_shows_the_timeline_in_order(staff_client, finished_call):
    # given / when
    response = staff_client.get(change_url(finished_call))
    # then every input applied is followed by the notifications it sent
    assert response.status_code == 200
    rows = list(zip(cells(response, "field-kind"), cells(response, "field-actor"),
                    cells(response, "field-device_id"), strict=True))
    assert rows == [
        ("dial", "alice", "alice-phone"), ("notified", "alice", "-"), ("notified", "bob", "-"),
        ("delivered", "-", "bob-phone"), ("notified", "alice", "-"),
        ("accept", "bob", "bob-phone"), ("notified", "bob", "-"), ("notified", "bob", "-"),
        ("notified", "alice", "-"),
        ("media", "alice", "alice-phone"), ("notified", "alice", "-"),
        ("media", "bob", "bob-phone"), ("notified", "bob", "-"),
        ("hangup", "alice", "alice-phone"), ("notified", "alice", "-"), ("notified", "bob", "-"),
    ]


def test_the_detail_page_shows_the_timings_from_the_start(staff_client, finished_call):
    # given / when
    response = staff_client.get(change_url(finished_call))
    # then
    assert cells(response, "field-timings") == [
        "Timings from the call's start (ms): delivered 500, accepted 2000, "
        "caller_first_frame 3000, callee_first_frame 3500, caller_connected 3000, "
        "callee_connected 3500, connected 3500"]
    assert cells(response, "field-phase") == ["Phase: ended"]
    assert cells(response, "field-end_reason") == ["End reason: hangup"]
    assert cells(response, "field-created_at") == ["Created at: March 10, 2025, noon"]
    assert cells(response, "field-ended_at") == ["Ended at: March 10, 2025, 12:01 p.m."]


def test_the_call_list_shows_setup_time_and_duration(staff_client, finished_call):
    # given / when
    response = staff_client.get(CHANGELIST)
    # then setup is start to connected, duration is connected to ended
    assert cells(response, "field-setup_ms") == ["3500"]
    assert cells(response, "field-duration") == ["56.5 s"]


def test_the_detail_page_has_no_editable_field(staff_client, finished_call):
    # given
    field_names = {field.name for field in CallSession._meta.fields}
    # when
    response = staff_client.get(change_url(finished_call))
    # then no control edits the record; the timeline has only the formset's hidden bookkeeping
    assert response.status_code == 200
    names = control_names(response)
    assert field_names & set(names) == set()
    assert [name for name in names if name.startswith("events-")] == [
        "events-TOTAL_FORMS", "events-INITIAL_FORMS", "events-MIN_NUM_FORMS",
        "events-MAX_NUM_FORMS",
    ] + [f"events-{row}-{name}" for row in range(16) for name in ("id", "call")]


def test_the_detail_page_refuses_a_save(staff_client, finished_call):
    # given
    before = CallSession.objects.values().get(pk=finished_call.pk)
    page = staff_client.get(change_url(finished_call))
    # when
    response = staff_client.post(change_url(finished_call), {
        "phase": "ringing", "_save": "Save", "events-TOTAL_FORMS": "16",
        "events-INITIAL_FORMS": "16", "events-MIN_NUM_FORMS": "0",
        "events-MAX_NUM_FORMS": "0"})
    # then the page offers no save, the post is refused and nothing is written
    assert "_save" not in control_names(page)
    assert response.status_code == 403
    assert CallSession.objects.values().get(pk=finished_call.pk) == before
    assert LogEntry.objects.count() == 0


def test_calls_cannot_be_added(staff_client):
    # given / when
    response = staff_client.get(f"{CHANGELIST}add/")
    # then
    assert response.status_code == 403
    assert CallSession.objects.count() == 0


def test_calls_cannot_be_deleted(staff_client, finished_call):
    # given
    before = CallSession.objects.values().get(pk=finished_call.pk)
    timeline = CallEvent.objects.filter(call=finished_call).count()
    # when
    page = staff_client.get(delete_url(finished_call))
    posted = staff_client.post(delete_url(finished_call), {"post": "yes"})
    # then
    assert (page.status_code, posted.status_code) == (403, 403)
    assert CallSession.objects.values().get(pk=finished_call.pk) == before
    assert CallEvent.objects.filter(call=finished_call).count() == timeline


def test_the_only_action_is_ending_live_calls(staff_client, finished_call):
    # given / when
    response = staff_client.get(CHANGELIST)
    # then there is no bulk delete
    assert action_choices(response) == [("", "---------"),
                                        ("end_calls", "End the selected live calls")]


# ---- ending live calls ----------------------------------------------------------------------


def end_calls(client, *selected: CallSession):
    return client.post(CHANGELIST, {"action": "end_calls",
                                    "_selected_action": [call.pk for call in selected]},
                       follow=True)


def state_events(user, call: CallSession) -> list[tuple[str, str]]:
    frames = UserEvent.objects.filter(user=user, call_id=call.call_id,
                                      frame__name="call.state").order_by("seq")
    return [(row.frame["state"], row.frame["reason"]) for row in frames]


def test_ending_a_live_call_ends_it_by_server_and_tells_both_users(staff_client, staff, calls):
    # given a ringing call
    call = calls["ringing"]
    caller_events = state_events(call.caller, call)
    callee_events = state_events(call.callee, call)
    # when staff end it
    response = end_calls(staff_client, call)
    # then
    assert response.status_code == 200
    assert [str(message) for message in response.context["messages"]] == ["Ended 1 call(s)."]
    ended = fresh(call)
    assert (ended.phase, ended.end_reason, ended.ended_by) == ("ended", "ended_by_server", "")
    assert ended.ended_at is not None
    assert state_events(call.caller, call) == caller_events + [("prepared", "endedByServer")]
    assert state_events(call.callee, call) == callee_events + [("prepared", "endedByServer")]
    assert list(CallEvent.objects.filter(call=call, kind="end_by_server")
                .values_list("actor_id", flat=True)) == [staff.pk]
    assert list(Profile.objects.filter(user__in=[call.caller, call.callee])
                .values_list("active_call", flat=True)) == [None, None]


@pytest.mark.parametrize("name", ["accepted", "connected"])
def test_ending_an_answered_call_tells_both_users(staff_client, calls, name):
    # given
    call = calls[name]
    # when
    end_calls(staff_client, call)
    # then
    assert (fresh(call).phase, fresh(call).end_reason) == ("ended", "ended_by_server")
    assert state_events(call.caller, call)[-1] == ("prepared", "endedByServer")
    assert state_events(call.callee, call)[-1] == ("prepared", "endedByServer")


def test_ending_selected_calls_leaves_an_ended_call_unchanged(staff_client, calls):
    # given a live call and an ended one, both selected
    live, done = calls["ringing"], calls["hangup"]
    before = CallSession.objects.values().get(pk=done.pk)
    timeline = list(CallEvent.objects.filter(call=done).values_list("id", flat=True))
    events = list(UserEvent.objects.filter(call_id=done.call_id).values_list("id", flat=True))
    # when
    response = end_calls(staff_client, live, done)
    # then only the live call ended; the ended one has no new row of any kind
    assert [str(message) for message in response.context["messages"]] == ["Ended 1 call(s)."]
    assert fresh(live).end_reason == "ended_by_server"
    assert CallSession.objects.values().get(pk=done.pk) == before
    assert list(CallEvent.objects.filter(call=done).values_list("id", flat=True)) == timeline
    assert list(UserEvent.objects.filter(call_id=done.call_id)
                .values_list("id", flat=True)) == events


def test_ending_only_ended_calls_changes_nothing(staff_client, calls):
    # given
    selected = [calls["busy"], calls["offline"], calls["hangup"]]
    before = list(CallSession.objects.values().order_by("pk"))
    counts = (CallEvent.objects.count(), UserEvent.objects.count())
    # when
    response = end_calls(staff_client, *selected)
    # then
    assert [str(message) for message in response.context["messages"]] == ["Ended 0 call(s)."]
    assert list(CallSession.objects.values().order_by("pk")) == before
    assert (CallEvent.objects.count(), UserEvent.objects.count()) == counts
