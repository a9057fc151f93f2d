"""bench/run.py --switch: the servers' switch (bench/switch/sitecustomize.py) and the load
generator's charging of each period to its side (bench/pace.py). The runs are benchmarks."""

from __future__ import annotations

import asyncio
import importlib.util
import threading
import time
from pathlib import Path

from django.conf import settings

from bench import pace
from bench.procstat import Sample
from bench.wire import summarize_ms

ROOT = Path(__file__).resolve().parent.parent


def _switch_module():
    spec = importlib.util.spec_from_file_location(
        "bench_switch_sitecustomize", ROOT / "bench" / "switch" / "sitecustomize.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # no DUET_BENCH_SWITCH here: starts no thread
    return module


def test_the_servers_switch_flips_the_setting_at_the_period_boundaries():
    module = _switch_module()
    stop = threading.Event()
    thread = threading.Thread(target=module.switch, args=("BENCH_TEST_SWITCH", 0.2, stop))
    thread.start()
    try:
        seen = []
        for _ in range(8):
            time.sleep(0.1)
            now = time.time()
            if 0.02 < now % 0.2 < 0.18:  # not right at a boundary
                seen.append((settings.BENCH_TEST_SWITCH, module.side(now, 0.2)))
        assert seen and all(value == expected for value, expected in seen), seen
        assert {value for value, _ in seen} == {False, True}
        # the load generator's convention (bench/pace.py): odd periods are "on"
        assert module.side(3.0, 2.0) is True and module.side(4.1, 2.0) is False
    finally:
        stop.set()
        thread.join(2)
        del settings.BENCH_TEST_SWITCH
    assert not thread.is_alive()


class _Window:
    def __init__(self):
        self.watch = None
        self.started_at = self.ended_at = 0.0


def test_each_side_gets_the_invites_and_cpu_of_its_own_periods():
    sampler = pace.PhaseSampler(_Window(), 2.0)
    # periods 100 (off: even) and 101, 103 (on: odd) were charged; 102 was cut by the window
    sampler.periods = {False: [100], True: [101, 103]}
    sampler.cpu = {False: {"node1": 0.4, "postgres": 0.2}, True: {"node1": 0.6, "postgres": 0.2}}
    sampler.own = {False: 0.1, True: 0.2}
    series = [(200.5, 4.0), (201.9, 6.0),  # period 100
              (202.1, 10.0), (203.0, 12.0), (207.5, 14.0), (206.0, 16.0),  # 101, 101, 103, 103
              (204.5, 99.0)]  # period 102: nobody's
    phases = sampler.report(series, summarize_ms)
    off, on = phases["off"], phases["on"]
    assert (off["periods"], off["seconds"], off["invite"]["count"]) == (1, 2.0, 2)
    assert (on["periods"], on["seconds"], on["invite"]["count"]) == (2, 4.0, 4)
    assert off["invite"]["max"] == 6.0 and on["invite"]["max"] == 16.0
    assert off["cycles_per_s"] == 1.0 and on["cycles_per_s"] == 1.0
    assert off["server_cpu_ms_per_cycle"] == 200.0  # 0.4 s of node CPU over 2 invites
    assert off["total_cpu_ms_per_cycle"] == 300.0
    assert on["server_cpu_ms_per_cycle"] == 150.0 and on["loadgen_cpu_ms_per_cycle"] == 50.0


def test_a_period_is_charged_between_two_samples_at_its_boundaries(monkeypatch):
    """The sampler charges the CPU between two boundary samples to the period that just ended,
    and leaves out the stretch before the first boundary and after the window closed."""
    period = 0.2
    window = _Window()

    first = int(time.time() // period)

    class Watch:  # "CPU" that grows by 2j+1 across period first+j: tells the periods apart
        def sample(self):
            return Sample(cpu_s={"node1": float((int(time.time() // period) - first) ** 2)})

    window.watch = Watch()
    sampler = pace.PhaseSampler(window, period)

    async def scenario():
        task = asyncio.create_task(sampler.run())
        window.started_at = time.monotonic()
        await asyncio.sleep(period * 4.5)
        window.ended_at = time.monotonic()
        await asyncio.wait_for(task, period * 3)

    asyncio.run(scenario())
    charged = sorted(sampler.periods[False] + sampler.periods[True])
    assert len(charged) >= 3 and charged == list(range(charged[0], charged[-1] + 1))
    assert all(period_ % 2 == 0 for period_ in sampler.periods[False])
    assert all(period_ % 2 == 1 for period_ in sampler.periods[True])
    # each side got the CPU of its own periods, between the samples at their two ends
    for side in (False, True):
        assert sampler.cpu[side].get("node1", 0) == sum(2 * (k - first) + 1
                                                         for k in sampler.periods[side])
