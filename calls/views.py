"""Pages. They render data from selectors; every call action happens over the socket."""

from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.shortcuts import render

from calls import selectors
from calls.routing import CALL_SOCKET_PATH


def initials(name: str) -> str:
    """Up to two capitals for an avatar: "Alice Liddell" -> "AL"."""
    return "".join(part[0].upper() for part in name.split()[:2]) or "?"


@login_required
def lobby(request):
    people = selectors.callable_users(exclude_user_id=request.user.pk)
    for person in people:
        person["initials"] = initials(person["display_name"])
    profile = getattr(request.user, "profile", None)
    my_name = profile.name if profile else request.user.get_username()
    return render(request, "calls/lobby.html", {
        "people": people,
        "my_name": my_name,
        "my_initials": initials(my_name),
        "socket_path": CALL_SOCKET_PATH,
    })


def healthz(request):
    return JsonResponse({"ok": True})
