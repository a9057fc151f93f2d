"""bench/ab.py: what it accepts, and the table it prints (the runs themselves are benchmarks)."""

from __future__ import annotations

import pytest

from bench import ab


def _result(name: str, cps: float, invite_p50: float, cpu: float) -> dict:
    latency = {"p50": invite_p50, "p95": invite_p50 * 2, "p99": invite_p50 * 3}
    return {"name": name, "cycles_per_s": cps,
            "latency_ms": {"invite": latency, "setup": {"p50": 20.0, "p99": 40.0}},
            "server_cpu_ms_per_cycle": cpu - 5, "total_cpu_ms_per_cycle": cpu}


def test_the_table_lists_every_run_and_each_sides_median():
    table = ab.table({
        "base": [_result("b1", 30.0, 8.0, 35.0), _result("b2", 29.9, 10.0, 38.0),
                 _result("b3", 30.0, 7.0, 36.0)],
        "head": [_result("h1", 30.0, 6.0, 34.0), _result("h2", 30.0, 6.5, 33.0)],
    }).splitlines()
    assert table[0].startswith("| run | c/s done | invite p50 |")
    assert [line.split(" | ")[0] for line in table[2:7]] == ["| b1", "| b2", "| b3", "| h1", "| h2"]
    base_median, head_median = table[7].split(" | "), table[8].split(" | ")
    assert base_median[0] == "| median, base (3 runs)"
    assert (base_median[2], base_median[-1]) == ("8", "36 |")  # invite p50, all CPU
    assert head_median[0] == "| median, head (2 runs)"
    assert (head_median[2], head_median[-1]) == ("6.25", "33.5 |")


@pytest.mark.parametrize("argv, complaint", [
    (["--label", "x", "--", "--scenario", "cycle"], "--base"),
    (["--base", "HEAD", "--", "--scenario", "cycle"], "--label"),
    (["--base", "HEAD", "--label", "x", "--", "--scenario", "cycle", "--label", "y"],
     "before the '--'"),
    (["--base", "HEAD", "--label", "x", "--", "--scenario", "idle"], "cycle runs"),
    (["--base", "no-such-revision-here", "--label", "x", "--", "--scenario", "cycle"],
     "no revision"),
])
def test_it_refuses_what_it_cannot_compare_before_running_anything(argv, complaint, capsys):
    with pytest.raises(SystemExit) as stopped:
        ab.main(argv)
    assert stopped.value.code == 2
    assert complaint in capsys.readouterr().err
