"""The call-cycle load generator: pairs of real protocol clients calling each other at a rate.

One cycle, as a pair of users does it (the exact sequence of tests/consumers/test_flows.py):

    caller ──call──▶                         callee ◀── call.state calling/remote*Call  (invite)
                                              callee ──ack──▶ (the delivery receipt)
    caller ◀── call.event remoteUserRecvCall
                                              callee ──accept──▶, then ──media first_remote_frame──▶
    caller ◀── call.state connecting/remoteAccepted
    caller ──media first_remote_frame──▶
    caller, callee ◀── call.state connected                                            (setup)
    caller ──hangup──▶ ; caller ◀── localHangup, callee ◀── remoteHangup                (done)

Measured per cycle, all from the client clocks of this one process (``time.perf_counter``):
invite delivery (the caller's ``call`` frame sent -> the callee's calling event received), the
call reply, the delivery receipt, full signaling setup (``call`` sent -> both ``connected``
received) and the whole cycle. Cycles start on an open-loop schedule at the target rate; a tick
that finds every pair busy is skipped and counted (the server is not keeping up).

    python -m bench.load job.json      (written by bench/run.py)
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field

from bench import pace
from bench.wire import LoadClient, ReplyError, is_call_event, is_state, summarize_ms

# How long one step of a cycle may wait for the server before the cycle counts as failed.
STEP_TIMEOUT_S = 10.0
# After the schedule ends, cycles in flight get this long to finish.
DRAIN_S = 15.0
# Failure messages kept in the result (the count is always complete).
FAILURES_KEPT = 20
# Turns a perf_counter reading into the epoch clock, to line a sample up with server logs.
EPOCH_MINUS_PERF = time.time() - time.perf_counter()


@dataclass
class Pair:
    index: int
    caller: LoadClient
    callee: LoadClient


@dataclass
class Timings:
    invite: list[float] = field(default_factory=list)
    call_reply: list[float] = field(default_factory=list)
    receipt: list[float] = field(default_factory=list)
    accept_reply: list[float] = field(default_factory=list)
    setup: list[float] = field(default_factory=list)
    hangup: list[float] = field(default_factory=list)
    cycle: list[float] = field(default_factory=list)
    # (the call frame's send time on the epoch clock, the invite's latency): with job "series"
    invite_series: list[tuple[float, float]] = field(default_factory=list)


class CycleLoad:
    def __init__(self, job: dict):
        self.job = job
        self.pairs: list[Pair] = []
        self.idle: deque[Pair] = deque()
        self.timings = Timings()
        self.failures: list[str] = []
        self.failure_count = 0
        self.completed_in_window = 0
        self.completed_total = 0
        self.in_flight: set[asyncio.Task] = set()
        self.window_open = False
        self.window_closed = False
        self.call_fields = {"call_type": job.get("call_type", "video")}
        self.frame_with_accept = job.get("callee_frame") == "with-accept"
        if job.get("timeout_ms"):
            self.call_fields["timeout_ms"] = job["timeout_ms"]

    async def connect(self) -> float:
        started = time.monotonic()
        job = self.job
        batches = job.get("event_batches", False)
        for index, (caller, callee) in enumerate(job["pairs"]):
            caller_url, callee_url = (job["pair_urls"][index] if job.get("pair_urls")
                                      else (job["caller_url"], job["callee_url"]))
            self.pairs.append(Pair(
                index,
                LoadClient(caller_url, caller["session_key"], f"c{caller['user_id']}",
                           user_id=caller["user_id"], event_batches=batches),
                LoadClient(callee_url, callee["session_key"], f"c{callee['user_id']}",
                           user_id=callee["user_id"], event_batches=batches)))

        def hello_fields(client: LoadClient, peer: LoadClient) -> dict:
            watch = job.get("watch", "peer")
            if watch == "peer":
                return {"watch": [peer.user_id]}
            if watch == "none":
                return {"watch": []}
            return {}  # "default": the server's default watch list

        factories = []
        for pair in self.pairs:
            factories.append(lambda p=pair: p.caller.connect(**hello_fields(p.caller, p.callee)))
            factories.append(lambda p=pair: p.callee.connect(**hello_fields(p.callee, p.caller)))
        await pace.gather_bounded(factories)
        self.idle.extend(self.pairs)
        return time.monotonic() - started

    def start_cycle(self, _: int) -> bool:
        if not self.idle:
            return False
        pair = self.idle.popleft()
        measured = self.window_open and not self.window_closed
        task = asyncio.create_task(self.cycle(pair, measured))
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)
        return True

    async def cycle(self, pair: Pair, measured: bool) -> None:
        caller, callee = pair.caller, pair.callee
        call_id = None
        try:
            call_id, call_sent, times = await asyncio.wait_for(self._steps(caller, callee),
                                                    STEP_TIMEOUT_S * 3)
        except (asyncio.TimeoutError, ReplyError, ConnectionError, KeyError) as error:
            self.failure_count += 1
            if len(self.failures) < FAILURES_KEPT:
                self.failures.append(f"pair {pair.index} call {call_id}: {type(error).__name__}: {error}")
            await self._clean_up(pair)
            if not (caller.closed.is_set() or callee.closed.is_set()):
                self.idle.append(pair)
            return
        self.completed_total += 1
        if self.window_open and not self.window_closed:
            self.completed_in_window += 1
        if measured:
            for name, value in times.items():
                getattr(self.timings, name).append(value)
            if self.job.get("series"):
                self.timings.invite_series.append(
                    (round(call_sent + EPOCH_MINUS_PERF, 4), round(times["invite"] * 1000, 2)))
        self.idle.append(pair)

    async def _steps(self, caller: LoadClient, callee: LoadClient) -> tuple[str, float, dict]:
        """One cycle: its call id, the moment its call frame left, and its timings."""
        caller.clear()
        callee.clear()
        ringing = callee.expect(is_state("calling"))
        frame_id, call_sent = await caller.send_frame("call", to=callee.user_id, **self.call_fields)
        data, call_replied = await caller.reply(frame_id, STEP_TIMEOUT_S)
        if data.get("outcome") != "ring":
            raise ReplyError("outcome", f"the call ended at once: {data.get('outcome')}")
        call_id = data["call_id"]
        receipt = caller.expect(is_call_event("remoteUserRecvCall", call_id))
        caller_connecting = caller.expect(is_state("connecting", call_id=call_id))
        caller_connected = caller.expect(is_state("connected", call_id=call_id))
        callee_connected = callee.expect(is_state("connected", call_id=call_id))
        rang_at, ring_event = await asyncio.wait_for(ringing, STEP_TIMEOUT_S)
        if ring_event["call_id"] != call_id:
            raise ReplyError("mismatch", f"callee rang for {ring_event['call_id']}, not {call_id}")

        async def callee_side():
            if self.frame_with_accept:  # the picture came while ringing: the accept says so
                _, sent, replied = await callee.request("accept", call_id=call_id,
                                                        first_remote_frame=True,
                                                        timeout=STEP_TIMEOUT_S)
                return replied - sent
            _, sent, replied = await callee.request("accept", call_id=call_id, timeout=STEP_TIMEOUT_S)
            await callee.request("media", call_id=call_id, milestone="first_remote_frame",
                                 timeout=STEP_TIMEOUT_S)
            return replied - sent

        async def caller_side():
            await asyncio.wait_for(caller_connecting, STEP_TIMEOUT_S)
            await caller.request("media", call_id=call_id, milestone="first_remote_frame",
                                 timeout=STEP_TIMEOUT_S)

        accept_reply, _ = await asyncio.gather(callee_side(), caller_side())
        (caller_at, _), (callee_at, _) = await asyncio.wait_for(
            asyncio.gather(caller_connected, callee_connected), STEP_TIMEOUT_S)
        receipt_at, _ = await asyncio.wait_for(receipt, STEP_TIMEOUT_S)
        caller_done = caller.expect(is_call_event("localHangup", call_id))
        callee_done = callee.expect(is_call_event("remoteHangup", call_id))
        _, hangup_sent, _ = await caller.request("hangup", call_id=call_id, timeout=STEP_TIMEOUT_S)
        (caller_end, _), (callee_end, _) = await asyncio.wait_for(
            asyncio.gather(caller_done, callee_done), STEP_TIMEOUT_S)
        return call_id, call_sent, {
            "invite": rang_at - call_sent,
            "call_reply": call_replied - call_sent,
            "receipt": receipt_at - call_sent,
            "accept_reply": accept_reply,
            "setup": max(caller_at, callee_at) - call_sent,
            "hangup": max(caller_end, callee_end) - hangup_sent,
            "cycle": max(caller_end, callee_end) - call_sent,
        }

    async def _clean_up(self, pair: Pair) -> None:
        """End whatever call a failed cycle left, so the pair can go on (best effort)."""
        for client in (pair.caller, pair.callee):
            if client.closed.is_set():
                continue
            for _, event in reversed(client.recent):
                if event.get("call_id"):
                    for frame in ("hangup", "cancel", "reject"):
                        try:
                            await client.request(frame, call_id=event["call_id"], timeout=5)
                        except (ReplyError, asyncio.TimeoutError, ConnectionError):
                            continue
                    break


async def main(job: dict) -> dict:
    pace.raise_open_files_limit()
    load = CycleLoad(job)
    connect_s = await load.connect()
    window = pace.ServerWindow(job["servers"], job.get("window_marker"))
    warmup_s, duration_s = job["warmup_s"], job["duration_s"]
    schedule_started = time.monotonic()
    until = schedule_started + warmup_s + duration_s
    max_cycles = job.get("cycles")

    async def open_window():
        await asyncio.sleep(warmup_s)
        load.window_open = True
        window.start()

    opener = asyncio.create_task(open_window())
    switch = job.get("switch")
    sampler = pace.PhaseSampler(window, switch["period_s"]) if switch else None
    sampling = asyncio.create_task(sampler.run()) if sampler else None
    started, skipped = await pace.paced(job["rate"], until, max_cycles, load.start_cycle)
    if not load.window_open:  # a --cycles run that ended before the warm-up did
        opener.cancel()
        load.window_open = True
        window.start()
    if max_cycles is not None:
        # a fixed number of cycles: the window lasts until they are all done
        if load.in_flight:
            await asyncio.wait(set(load.in_flight), timeout=DRAIN_S)
    load.window_closed = True
    window.stop()
    if sampling is not None:
        sampling.cancel()
    drain_deadline = time.monotonic() + DRAIN_S
    while load.in_flight and time.monotonic() < drain_deadline:
        await asyncio.wait(set(load.in_flight), timeout=drain_deadline - time.monotonic())
    unfinished = len(load.in_flight)
    for task in list(load.in_flight):
        task.cancel()
    duplicates = sum(p.caller.duplicates + p.callee.duplicates for p in load.pairs)
    events = sum(p.caller.events_received + p.callee.events_received for p in load.pairs)
    presence = sum(p.caller.presence_frames + p.callee.presence_frames for p in load.pairs)
    event_frames = sum(p.caller.event_frames + p.callee.event_frames for p in load.pairs)
    sent = sum(p.caller.frames_sent + p.callee.frames_sent for p in load.pairs)
    still_open = sum(not c.closed.is_set() for p in load.pairs for c in (p.caller, p.callee))
    await asyncio.gather(*(c.close() for p in load.pairs for c in (p.caller, p.callee)),
                         return_exceptions=True)
    completed = load.completed_in_window
    result = {
        "scenario": "cycle",
        "pairs": len(load.pairs),
        "target_rate": job["rate"],
        "connect_s": round(connect_s, 2),
        "started": started,
        "skipped_ticks": skipped,
        "completed_total": load.completed_total,
        "completed_in_window": completed,
        "cycles_per_s": round(completed / window.seconds, 2) if window.seconds else None,
        "failures": load.failure_count,
        "failure_samples": load.failures,
        "unfinished_after_drain": unfinished,
        "events_received": events,
        "events_per_cycle": round(events / load.completed_total, 2) if load.completed_total else None,
        "event_batches": job.get("event_batches", False),
        # frames that carried sequenced events (events frames and replies with events included);
        # each was acknowledged once
        "event_frames_per_cycle": (round(event_frames / load.completed_total, 2)
                                   if load.completed_total else None),
        "client_frames_sent_excluding_acks": sent,
        "duplicate_events": duplicates,
        "presence_frames": presence,
        "sockets_open_at_end": still_open,
        "latency_ms": {name: summarize_ms(getattr(load.timings, name))
                       for name in ("invite", "call_reply", "receipt", "accept_reply", "setup",
                                    "hangup", "cycle")},
        **window.report(completed, "cycle"),
    }
    if job.get("series"):
        result["invite_series"] = load.timings.invite_series
    if sampler is not None:
        result["switch"] = {**switch, "phases": sampler.report(load.timings.invite_series,
                                                                summarize_ms)}
    # the rate of frames that carried events to the clients: what the relay is run at (one per
    # event, or fewer with event_batches)
    result["event_frames_per_s"] = (
        round(result["event_frames_per_cycle"] * result["cycles_per_s"], 1)
        if result["event_frames_per_cycle"] and result["cycles_per_s"] else None)
    return result


if __name__ == "__main__":
    job = pace.read_job()
    pace.write_result(job, asyncio.run(main(job)))
