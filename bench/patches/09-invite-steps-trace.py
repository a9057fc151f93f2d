"""Temporary trace of an invite's server-side steps (docs/benchmarks.md, "The invite, step by step").

Applies timestamps to the working tree's calls/ (never commit the result):

    .venv/bin/python bench/patches/09-invite-steps-trace.py
    DUET_BENCH_...=... .venv/bin/python bench/run.py --scenario cycle --layer pubsub --nodes 2 \
        --rate 10 --callee-frame with-accept --env DUET_TRACE=/tmp/duet-trace.log --label trace
    .venv/bin/python bench/patches/09-invite-steps-report.py /tmp/duet-trace.log
    git checkout calls/

Each node appends "time pid thread step detail" lines to $DUET_TRACE: the frame read (recv), the
database thread's start and pre-commit (dbstart, precommit), the hand-off of the publication
(handoff), the send's start on the loop (gs-start), the subscriber's read on the other node
(redis-in), the consumer's handler (uev) and the frame sent (sent). Made for the code as of
2026-11-26 (project/channel_layer.py's group_send_many); it stops with an error if a hook point
moved.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def patch(path: str, old: str, new: str) -> None:
    file = ROOT / path
    text = file.read_text()
    if old not in text:
        sys.exit(f"{path}: hook point not found:\n{old}")
    file.write_text(text.replace(old, new, 1))


patch('calls/consumers.py', '''    async def receive(self, text_data=None, bytes_data=None):
        try:''', '''    async def receive(self, text_data=None, bytes_data=None):
        _T("recv", text_data[:60] if text_data else "")
        try:''')

patch('calls/consumers.py', '''    async def user_events(self, message):
        """Events published for this user (calls.events.publish)."""''', '''    async def user_events(self, message):
        """Events published for this user (calls.events.publish)."""
        _T("uev", message["events"][0]["frame"].get("reason",""))''')

patch('calls/consumers.py', '''        await self.send_json(frame)
        if self.resend_task''', '''        await self.send_json(frame)
        _T("sent", frame.get("reason",""))
        if self.resend_task''')

(ROOT / 'calls/consumers.py').write_text((ROOT / 'calls/consumers.py').read_text() + '''
import os as _os
_TF = open(_os.environ.get("DUET_TRACE","/dev/null"), "a", buffering=1)
def _T(what, extra=""):
    import time as _t, threading as _th
    _TF.write(f"{_t.time():.6f} {_os.getpid()} {_th.current_thread().name[:8]} {what} {extra}\\n")
def _trace_layer():
    from project import channel_layer as _cl
    from channels_redis import pubsub as _ps
    orig = _cl.PubSubChannelLayer.group_send_many
    async def gsm(self, messages):
        _T("gs-start", messages[-1][0])
        await orig(self, messages)
        _T("gs-done", messages[-1][0])
    _cl.PubSubChannelLayer.group_send_many = gsm
    orig_recv = _ps.RedisSingleShardConnection._receive_message
    def _receive_message(self, message):
        if message is not None:
            _T("redis-in", message["channel"])
        return orig_recv(self, message)
    _ps.RedisSingleShardConnection._receive_message = _receive_message
_trace_layer()
''')

patch('calls/services.py', '''            with transaction.atomic(), rows.pipelined():
                reply = reply_ok(frame_id, handle())
                store_reply(reply)
            return reply''', '''            from calls.consumers import _T
            _T("dbstart")
            with transaction.atomic(), rows.pipelined():
                reply = reply_ok(frame_id, handle())
                store_reply(reply)
                _T("precommit")
            _T("committed")
            return reply''')

patch('calls/events.py', '''    if home is not None and home.is_running():
        future = asyncio''', '''    if home is not None and home.is_running():
        from calls.consumers import _T
        _T("handoff", messages[-1][0])
        future = asyncio''')
