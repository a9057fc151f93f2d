"""Pages. They render data from selectors; every call action happens over the socket."""

from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.shortcuts import render

from calls import selectors


@login_required
def lobby(request):
    return render(request, "calls/lobby.html", {
        "people": selectors.callable_users(exclude_user_id=request.user.pk),
    })


def healthz(request):
    return JsonResponse({"ok": True})
