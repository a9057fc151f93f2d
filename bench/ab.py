"""A/B: bench/run.py for the code before a change and after it, alternating, on the same machine.

    .venv/bin/python bench/ab.py --base f4363e4 --label batch30 [--pairs 3] -- \\
        --scenario cycle --layer pubsub --nodes 2 --rate 30 --callee-frame with-accept

This machine runs at two speeds, 10-25 % apart, changing within minutes (docs/benchmarks.md), so a
change is only ever compared with the code before it in runs made minutes apart, the two sides
alternating. ``base`` runs from a temporary git worktree of that revision (this checkout's .venv
and node_modules linked in); ``head`` is this working tree, uncommitted changes included. Every
run writes its result to bench/results as usual, labelled ``<label>-base`` or ``<label>-head``;
the table at the end gives each run and the median of each side.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.run import RESULTS_DIR  # noqa: E402
from bench.summary import write_summary  # noqa: E402

# (column, how to read it from a cycle result)
COLUMNS = (
    ("c/s done", lambda r: r["cycles_per_s"]),
    ("invite p50", lambda r: r["latency_ms"]["invite"]["p50"]),
    ("invite p95", lambda r: r["latency_ms"]["invite"]["p95"]),
    ("invite p99", lambda r: r["latency_ms"]["invite"]["p99"]),
    ("setup p50", lambda r: r["latency_ms"]["setup"]["p50"]),
    ("setup p99", lambda r: r["latency_ms"]["setup"]["p99"]),
    ("server CPU ms/cycle", lambda r: r["server_cpu_ms_per_cycle"]),
    ("all CPU ms/cycle", lambda r: r["total_cpu_ms_per_cycle"]),
)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    run_args = argv[argv.index("--") + 1:] if "--" in argv else []
    own_args = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the git revision before the change")
    parser.add_argument("--label", required=True, help="the runs' label stem")
    parser.add_argument("--pairs", type=int, default=3, help="base/head pairs (default 3)")
    args = parser.parse_args(own_args)
    if "--label" in run_args:
        parser.error("give --label before the '--', not in bench/run.py's arguments")
    if "--scenario" not in run_args or "cycle" not in run_args:
        parser.error("compares cycle runs: pass '-- --scenario cycle ...'")
    base = subprocess.run(["git", "rev-parse", "--verify", f"{args.base}^{{commit}}"], cwd=ROOT,
                          capture_output=True, text=True)
    if base.returncode != 0:
        parser.error(f"no revision {args.base!r} in this repository")

    worktree = Path(tempfile.mkdtemp(prefix="duet-ab-"))
    subprocess.run(["git", "worktree", "add", "--detach", "--force", str(worktree),
                    base.stdout.strip()], cwd=ROOT, check=True, capture_output=True)
    results: dict[str, list[dict]] = {"base": [], "head": []}
    try:
        for name in (".venv", "node_modules"):
            if (ROOT / name).exists():
                (worktree / name).symlink_to(ROOT / name)
        for pair in range(args.pairs):
            for side, tree in (("base", worktree), ("head", ROOT)):
                print(f"[ab] pair {pair + 1}/{args.pairs}: {side}", flush=True)
                result = _run(tree, [*run_args, "--label", f"{args.label}-{side}"])
                results[side].append(result)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT,
                       capture_output=True)
        write_summary(RESULTS_DIR)
    print(table(results))
    return 0


def _run(tree: Path, run_args: list[str]) -> dict:
    """One bench/run.py in ``tree``, its result written to this checkout's bench/results."""
    env = {**os.environ, "DUET_BENCH_RESULTS": str(RESULTS_DIR)}
    done = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "bench/run.py", *run_args],
                          cwd=tree, env=env, capture_output=True, text=True)
    written = [line.split(" wrote ", 1)[1].strip() for line in done.stdout.splitlines()
               if " wrote " in line]
    cycles = [json.loads(Path(path).read_text()) for path in written]
    cycles = [result for result in cycles if result.get("scenario") == "cycle"]
    if done.returncode != 0 or not cycles:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"bench/run.py failed in {tree} (exit {done.returncode})")
    print(f"[ab]   {cycles[0]['name']}", flush=True)
    return cycles[0]


def table(results: dict[str, list[dict]]) -> str:
    """A markdown table: every run, then each side's median."""
    lines = ["| run | " + " | ".join(name for name, _ in COLUMNS) + " |",
             "|---|" + "---|" * len(COLUMNS)]
    for side in ("base", "head"):
        for result in results[side]:
            lines.append(f"| {result['name']} | "
                         + " | ".join(f"{read(result):g}" for _, read in COLUMNS) + " |")
    for side in ("base", "head"):
        if results[side]:
            medians = [statistics.median(read(result) for result in results[side])
                       for _, read in COLUMNS]
            lines.append(f"| median, {side} ({len(results[side])} runs) | "
                         + " | ".join(f"{value:.4g}" for value in medians) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
