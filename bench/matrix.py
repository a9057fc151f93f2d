"""The benchmark matrix: bench/run.py over layers, node counts and load levels, in one go.

    .venv/bin/python bench/matrix.py cycles   [--rates 10,25,50,100] [--layers pubsub,redis,memory]
    .venv/bin/python bench/matrix.py floor    [--rates 100,250,500,1000,2000]
    .venv/bin/python bench/matrix.py idle     [--layers ...] [--checkpoints 1000,5000,10000]

``cycles`` raises the rate for each (layer, nodes) until the run saturates, then moves on: a run
is saturated when it completes under SATURATED_SHARE of its target rate, fails cycles, or its
invite p99 passes SATURATED_P99_MS. Each cycle run is followed by the bare relay at the same
event frame rate (--with-floor). Every run stays bounded by run.py's own limits.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import run  # noqa: E402

# Completed under this share of the target rate: the server no longer keeps up.
SATURATED_SHARE = 0.9
# Invite delivery slower than this at p99 is no longer an interactive call.
SATURATED_P99_MS = 1000.0


def saturated(result: dict) -> bool:
    p99 = result["latency_ms"]["invite"]["p99"]
    return (result["cycles_per_s"] is None
            or result["cycles_per_s"] < SATURATED_SHARE * result["target_rate"]
            or result["failures"] > 0
            or p99 is None or p99 > SATURATED_P99_MS)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=["cycles", "floor", "idle"])
    parser.add_argument("--layers", default="pubsub,redis,memory")
    parser.add_argument("--nodes", default="1,2")
    parser.add_argument("--rates", default=None)
    parser.add_argument("--checkpoints", default="1000,5000,10000")
    parser.add_argument("--pairs", default="100")
    parser.add_argument("--duration", default="20")
    parser.add_argument("--label", default="matrix")
    parser.add_argument("--extra", default="", help="more run.py arguments, space-separated")
    args = parser.parse_args(argv)
    run.raise_open_files_limit()
    layers = args.layers.split(",")
    nodes = [int(n) for n in args.nodes.split(",")]
    extra = args.extra.split() if args.extra else []
    common = ["--pairs", args.pairs, "--duration", args.duration, "--label", args.label, *extra]
    if args.kind == "cycles":
        rates = [float(r) for r in (args.rates or "10,25,50,100").split(",")]
        for layer in layers:
            for count in nodes:
                if layer == "memory" and count != 1:
                    continue
                for rate in rates:
                    argv_run = ["--scenario", "cycle", "--layer", layer, "--nodes", str(count),
                                "--rate", f"{rate:g}", "--with-floor", *common]
                    result = _run(argv_run)
                    if saturated(result):
                        run.log(f"{layer} x{count} saturated at {rate:g} cycles/s")
                        break
    elif args.kind == "floor":
        rates = [float(r) for r in (args.rates or "100,250,500,1000,2000").split(",")]
        for layer in layers:
            for count in nodes:
                if layer == "memory" and count != 1:
                    continue
                for rate in rates:
                    result = _run(["--scenario", "relay", "--layer", layer, "--nodes", str(count),
                                   "--rate", f"{rate:g}", *common])
                    p99 = result["latency_ms"]["frame"]["p99"]
                    if ((result["frames_per_s"] or 0) < SATURATED_SHARE * rate
                            or p99 is None or p99 > SATURATED_P99_MS):
                        run.log(f"relay {layer} x{count} saturated at {rate:g} frames/s")
                        break
    else:
        for layer in layers:
            _run(["--scenario", "idle", "--layer", layer, "--checkpoints", args.checkpoints,
                  "--label", args.label, *extra])
    from bench.summary import write_summary

    write_summary(run.RESULTS_DIR)
    return 0


def _run(argv_run: list[str]) -> dict:
    return run.run_and_floor(argv_run)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
