"""The two figures a browser video call reports, from both pages' cost nodes.

Both pages run on one machine, so their epoch clocks (performance.timeOrigin + now) compare.
"""

from __future__ import annotations

from statistics import median


def call_timings(caller, callee) -> dict:
    """ms of: accept to connected (each side), call to first remote frame (each side), and the
    accept request's round trip (how much of accept-to-connected is the server's)."""
    a, b = caller.costs(), callee.costs()
    accept = b["marks"]["acceptCall"]
    call_start = a["start"]
    accept_round_trip = callee.page.evaluate(
        "duet.api.socket.replyTimes.filter((t) => t.type === 'accept').at(-1).ms")
    return {
        "accept_round_trip": accept_round_trip,  # the server's share: accept sent -> its reply
        "accept_to_connected_callee": b["marks"]["connected"] - accept,
        "accept_to_connected_caller": a["marks"]["connected"] - accept,
        "call_to_first_frame_caller": a["marks"]["recvFirstFrame"] - call_start,
        "call_to_first_frame_callee": b["marks"]["recvFirstFrame"] - call_start,
    }


def print_timings(label: str, timings: dict) -> None:
    figures = ", ".join(f"{name} {value:.1f} ms" for name, value in timings.items())
    print(f"\n[timings] {label}: {figures}")


def medians(samples: list[dict]) -> dict:
    return {name: median(sample[name] for sample in samples) for name in samples[0]}
