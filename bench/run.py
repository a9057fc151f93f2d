"""The benchmark runner: `make bench` (or `.venv/bin/python bench/run.py --help`).

One run = one scenario on one layer and topology:
- starts what the scenario needs as subprocesses: daphne nodes (Duet through ``manage.py serve``,
  or the bare relay ``bench.relay_app``), a Celery worker and beat (Duet on a Redis layer; on the
  in-memory layer the worker is embedded in the one daphne process, as in the embedded default),
  all with the production-style environment (PostgreSQL, Redis, DJANGO_DEBUG=0);
- prepares the users with sessions in bulk (bench/users.py) after emptying the call tables;
- runs the load generator as its own process (bench/load.py, bench/relay.py or bench/idle.py),
  which charges CPU to the server processes over its measured window;
- reads the servers' peak RSS (VmHWM), stops everything, and writes a JSON result under
  bench/results/ and regenerates bench/results/README.md (the tables).

Everything stays on 127.0.0.1; every run is bounded in count and time. Redis is used on its own
database number (DUET_BENCH_REDIS_URL, default db 7, flushed before each run) with its own
layer prefix and Celery queue, so a test run on the same Redis never sees the benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import procstat  # noqa: E402

VENV_BIN = Path(sys.executable).parent
# A scratch worktree with a patch applied writes its results here too (DUET_BENCH_RESULTS).
RESULTS_DIR = Path(os.environ.get("DUET_BENCH_RESULTS", ROOT / "bench" / "results"))
LOG_DIR = RESULTS_DIR / "logs"
DATABASE_URL = os.environ.get("DUET_BENCH_DATABASE_URL",
                              "postgres://postgres@127.0.0.1:5432/duet_bench")
REDIS_URL = os.environ.get("DUET_BENCH_REDIS_URL", "redis://127.0.0.1:6379/7")
LAYER_PREFIX = "duet-bench"
CELERY_QUEUE = "duet-bench"
# The servers' and the runner's (which signs the sessions) secret key.
SECRET_KEY = "bench-secret-key-not-for-production-0123456789abcdef"
BASE_PORT = int(os.environ.get("DUET_BENCH_PORT", "8100"))
# How long a server may take to start listening.
SERVER_START_S = 60
# A load generator gets its planned time plus this before it is stopped.
LOADGEN_SLACK_S = 240
# How long a stopped server gets to exit before it is killed.
STOP_GRACE_S = 10


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---- environment and processes ----------------------------------------------------------------


def server_env(args) -> dict:
    env = dict(os.environ)
    env.update({
        "DATABASE_URL": DATABASE_URL,
        "REDIS_URL": REDIS_URL,
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": SECRET_KEY,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DUET_LOG_LEVEL": "WARNING",
        "DUET_LAYER_PREFIX": LAYER_PREFIX,
        "DUET_CELERY_QUEUE": CELERY_QUEUE,
        "DUET_CHANNEL_LAYER": args.layer,
        "DUET_VAR_DIR": str(Path(tempfile.gettempdir()) / "duet-bench-var"),
        "PYTHONUNBUFFERED": "1",
    })
    env["DUET_EMBEDDED_WORKER"] = "1" if args.layer == "memory" else "0"
    if args.conn_max_age is not None:
        env["DATABASE_CONN_MAX_AGE"] = str(args.conn_max_age)
    else:
        env.pop("DATABASE_CONN_MAX_AGE", None)  # the settings' default
    for item in args.env or []:
        name, _, value = item.partition("=")
        env[name] = value
    if getattr(args, "switch", None):
        env["DUET_BENCH_SWITCH"] = f"{args.switch}:{args.switch_period}"
        env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT / "bench" / "switch")] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


class Processes:
    def __init__(self, run_name: str):
        self.run_name = run_name
        self.started: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}

    def start(self, name: str, command: list[str], env: dict) -> subprocess.Popen:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        path = LOG_DIR / f"{self.run_name}-{name}.log"
        handle = open(path, "w")
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=handle,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        handle.close()
        self.started[name] = process
        self.logs[name] = path
        log(f"started {name} (pid {process.pid}): {' '.join(command)}")
        return process

    def pids(self) -> dict[str, int]:
        return {name: process.pid for name, process in self.started.items()}

    def stop_all(self) -> None:
        for name, process in self.started.items():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + STOP_GRACE_S
        for name, process in self.started.items():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def error_lines(self) -> dict[str, list[str]]:
        """Tracebacks and error lines each server logged (the first few)."""
        found = {}
        for name, path in self.logs.items():
            lines = [line.rstrip() for line in path.read_text(errors="replace").splitlines()
                     if "Traceback" in line or "ERROR" in line or "Error:" in line]
            if lines:
                found[name] = lines[:10] + ([f"... {len(lines) - 10} more"] if len(lines) > 10 else [])
        return found


def wait_port(port: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"a server exited at start (code {process.returncode}); see {LOG_DIR}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)  # polling a port: there is no event to wait on
    raise SystemExit(f"nothing listens on port {port} after {SERVER_START_S}s")


def node_core(node: int) -> int:
    """The core node ``node`` (1-based) is pinned to with ``--pin on``: one node per core."""
    cores = sorted(os.sched_getaffinity(0))
    return cores[(node - 1) % len(cores)]


def start_servers(args, processes: Processes, *, app: str) -> list[str]:
    env = server_env(args)
    urls = []
    for node in range(1, args.nodes + 1):
        port = BASE_PORT + node
        pinned = args.pin == "on"
        taskset = ["taskset", "-c", str(node_core(node))] if pinned else []
        if args.memprobe and node == 1:
            command = [*taskset, str(VENV_BIN / "python"), "-m", "bench.memprobe", "-b",
                       "127.0.0.1", "-p", str(port), "project.asgi:application" if app == "duet"
                       else "bench.relay_app:application"]
            env = {**env, "DUET_BENCH_MEMPROBE_OUT": str(RESULTS_DIR / "profiles" / f"{processes.run_name}-mem")}
            (RESULTS_DIR / "profiles").mkdir(parents=True, exist_ok=True)
        elif app == "duet":  # Duet pins itself, as the README's topology has it
            command = [str(VENV_BIN / "python"), "manage.py", "serve", "--port", str(port),
                       *(["--cpu", str(node_core(node))] if pinned else [])]
        else:
            command = [*taskset, str(VENV_BIN / "daphne"), "-b", "127.0.0.1", "-p", str(port),
                       "bench.relay_app:application"]
        processes.start(f"node{node}", command, env)
        urls.append(f"http://127.0.0.1:{port}")
    if app == "duet" and args.layer != "memory":
        processes.start("worker", [str(VENV_BIN / "celery"), "-A", "project", "worker", "-P",
                                   "threads", "-c", "4", "-Q", CELERY_QUEUE, "-l", "WARNING",
                                   "--without-heartbeat", "--without-mingle", "--without-gossip"],
                        env)
        schedule = Path(env["DUET_VAR_DIR"]) / "celerybeat-schedule-bench"
        schedule.parent.mkdir(parents=True, exist_ok=True)
        processes.start("beat", [str(VENV_BIN / "celery"), "-A", "project", "beat", "-l",
                                 "WARNING", "-s", str(schedule)], env)
    for node, url in enumerate(urls, start=1):
        wait_port(BASE_PORT + node, processes.started[f"node{node}"])
    return urls


def flush_redis() -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    client.close()


# ---- Django: users -----------------------------------------------------------------------------

_django_ready = False


def django_setup() -> None:
    global _django_ready
    if _django_ready:
        return
    os.environ["DATABASE_URL"] = DATABASE_URL
    os.environ["DJANGO_SECRET_KEY"] = SECRET_KEY  # sessions are signed with the servers' key
    os.environ["DJANGO_DEBUG"] = "0"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    os.environ.setdefault("DUET_LOG_LEVEL", "WARNING")
    import django

    ensure_database(DATABASE_URL)
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    _django_ready = True


def ensure_database(url: str) -> None:
    """Create the benchmark's PostgreSQL database when it is missing (a fresh machine)."""
    from urllib.parse import urlsplit

    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    if not parts.scheme.startswith("postgres"):
        return
    name = parts.path.lstrip("/")
    admin = psycopg.connect(host=parts.hostname or "127.0.0.1", port=parts.port or 5432,
                            user=parts.username or "postgres", password=parts.password,
                            dbname="postgres", autocommit=True)
    try:
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is None:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            log(f"created database {name}")
    finally:
        admin.close()


def prepare(count: int, population: int = 0) -> list[dict]:
    """``count`` users to drive, in a table of at least ``population`` users with profiles: the
    call queries run against tables of a realistic size, not against the few rows in use."""
    django_setup()
    from bench.users import prepare_users, reset_call_tables

    started = time.monotonic()
    reset_call_tables()
    users = prepare_users(max(count, population))[:count]
    log(f"{count} users with sessions ready (of {max(count, population)}) in "
        f"{time.monotonic() - started:.1f}s")
    return [{"user_id": u.user_id, "session_key": u.session_key} for u in users]


# ---- profiling -------------------------------------------------------------------------------


def profile_when_window_opens(marker: Path, pid: int, seconds: float, output: Path,
                              *, gil_only: bool = False) -> threading.Thread:
    """Run ``py-spy record`` on ``pid`` for the measured window (the load generator's marker)."""

    def run():
        deadline = time.monotonic() + LOADGEN_SLACK_S
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.2)  # the marker file is written by another process
        if not marker.exists():
            return
        subprocess.run([str(VENV_BIN / "py-spy"), "record", "-p", str(pid), "-d",
                        str(max(1, int(seconds))), "-r", "100", "--nonblocking", "-f", "raw",
                        *(["--gil"] if gil_only else []),
                        "-o", str(output)], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False, timeout=seconds + 60)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


# ---- one run ---------------------------------------------------------------------------------


def machine() -> dict:
    model = ""
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as handle:
        total_kib = int(handle.readline().split()[1])
    return {"cpus": os.cpu_count(), "cpu_model": model, "memory_gib": round(total_kib / 2**20, 1),
            "kernel": platform.release(), "python": platform.python_version(),
            "network": "loopback (127.0.0.1); the load generator runs on the same cores"}


def git_commit() -> str:
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True, check=False)
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "calls", "project"], cwd=ROOT,
                           capture_output=True, text=True, check=False).stdout.strip()
    return result.stdout.strip() + ("+uncommitted-changes-in-calls-or-project" if dirty else "")


def run_name(args) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    if args.scenario == "idle":
        size = f"{max(args.checkpoints)}u"
    elif args.scenario == "relay":
        size = f"{args.rate:g}fps"
    else:
        size = f"{args.rate:g}cps"
    label = f"-{args.label}" if args.label else ""
    return f"{stamp}-{args.scenario}-{args.layer}-{args.nodes}n-{size}{label}"


def run_once(args, command_line: str) -> dict:
    name = run_name(args)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    processes = Processes(name)
    load_at_start = procstat.load_average()
    log(f"run {name}; load average {load_at_start}")
    flush_redis()
    app = "relay" if args.scenario == "relay" or (args.scenario == "idle" and args.target == "relay") else "duet"
    users = []
    if app == "duet":
        count = 2 * args.pairs if args.scenario == "cycle" else max(args.checkpoints)
        users = prepare(count, args.population)
    job_dir = Path(tempfile.mkdtemp(prefix="duet-bench-"))
    job = {"result_path": str(job_dir / "result.json"), "warmup_s": args.warmup,
           "duration_s": args.duration, "rate": args.rate,
           "window_marker": str(job_dir / "window-open")}
    try:
        urls = start_servers(args, processes, app=app)
        time.sleep(1.0)  # let the worker and beat finish starting: their CPU is not the run's
        job["servers"] = processes.pids()
        if args.scenario == "cycle":
            module = "bench.load"
            pairs = [(users[2 * i], users[2 * i + 1]) for i in range(args.pairs)]
            job.update(pairs=pairs, caller_url=urls[0], callee_url=urls[-1], watch=args.watch,
                       cycles=args.cycles, timeout_ms=args.timeout_ms,
                       callee_frame=args.callee_frame,
                       event_batches=args.event_batches == "on", series=args.series)
            if args.switch:
                job["switch"] = {"setting": args.switch, "period_s": args.switch_period}
            if args.placement == "together":  # pair i on node i mod n, both of its users
                job["pair_urls"] = [(urls[i % len(urls)],) * 2 for i in range(args.pairs)]
        elif args.scenario == "relay":
            module = "bench.relay"
            job.update(pairs=args.pairs, a_url=urls[0].replace("http", "ws", 1),
                       b_url=urls[-1].replace("http", "ws", 1), frames=args.cycles)
        else:
            module = "bench.idle"
            job.update(users=users, url=urls[0] if app == "duet" else urls[0].replace("http", "ws", 1),
                       checkpoints=args.checkpoints, target=args.target, watch=args.watch,
                       hold_s=args.hold, memprobe=args.memprobe)
        job_path = job_dir / "job.json"
        job_path.write_text(json.dumps(job))
        profiler = None
        if args.profile:
            suffix = "-gil" if args.profile == "gil" else ""
            profile_path = RESULTS_DIR / "profiles" / f"{name}-node1{suffix}.txt"
            profile_path.parent.mkdir(parents=True, exist_ok=True)
            profiler = profile_when_window_opens(Path(job["window_marker"]), job["servers"]["node1"],
                                                 args.duration, profile_path,
                                                 gil_only=args.profile == "gil")
        log(f"load generator {module} ...")
        loadgen_started = time.monotonic()
        completed = subprocess.run([str(VENV_BIN / "python"), "-m", module, str(job_path)],
                                   cwd=ROOT, check=False,
                                   timeout=args.warmup + args.duration + args.hold + LOADGEN_SLACK_S
                                   + (600 if args.scenario == "idle" else 0))
        if completed.returncode != 0:
            raise SystemExit(f"the load generator failed (exit {completed.returncode})")
        result = json.loads(Path(job["result_path"]).read_text())
        result["loadgen_wall_s"] = round(time.monotonic() - loadgen_started, 1)
        if profiler is not None:
            profiler.join(args.duration + 90)
            result["profile"] = str(profile_path)
        watch = procstat.Watch(job["servers"], include_backing=False)
        result["peak_rss_kib"] = watch.peak_rss_kib()
        result["rss_kib_at_end"] = watch.rss_kib()
    finally:
        processes.stop_all()
    result.update({
        "name": name,
        "command": command_line,
        "layer": args.layer,
        "nodes": args.nodes,
        "app": app,
        "conn_max_age": args.conn_max_age,
        "population": args.population,
        "watch": args.watch if app == "duet" else None,
        "callee_frame": args.callee_frame if args.scenario == "cycle" else None,
        "placement": args.placement if args.scenario == "cycle" else None,
        "pinned": args.pin == "on",
        "event_batches": args.event_batches == "on" if args.scenario == "cycle" else None,
        "load_average_at_start": load_at_start,
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "git": git_commit(),
        "tree": str(ROOT),
        "server_errors": processes.error_lines(),
        "log_files": {key: str(path) for key, path in processes.logs.items()},
        "extra_env": args.env or [],
    })
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(result, indent=1))
    log(f"wrote {path}")
    log(headline(result))
    return result


def headline(result: dict) -> str:
    if result["scenario"] == "cycle":
        inv = result["latency_ms"]["invite"]
        setup = result["latency_ms"]["setup"]
        return (f"cycles/s {result['cycles_per_s']} (target {result['target_rate']}), failures "
                f"{result['failures']}, skipped {result['skipped_ticks']}; invite p50/p95/p99 "
                f"{inv['p50']}/{inv['p95']}/{inv['p99']} ms; setup p50/p99 {setup['p50']}/"
                f"{setup['p99']} ms; server CPU {result['server_cpu_ms_per_cycle']} ms/cycle, "
                f"total {result['total_cpu_ms_per_cycle']} ms/cycle; peak RSS "
                f"{result['peak_rss_kib']}" + _switch_headline(result.get("switch")))
    if result["scenario"] == "relay":
        frame = result["latency_ms"]["frame"]
        return (f"frames/s {result['frames_per_s']} (target {result['target_rate']}), lost "
                f"{result['lost_in_window']}; p50/p95/p99 {frame['p50']}/{frame['p95']}/"
                f"{frame['p99']} ms; server CPU {result['server_cpu_ms_per_frame']} ms/frame")
    points = ", ".join(f"{p['connected']}: {p['kib_per_connection']} KiB" for p in result["checkpoints"])
    return (f"idle per connection {points}; open after hold {result['still_open_after_hold']}; "
            f"probe {result['probe_cycle_after_hold']}")


def _switch_headline(switch: dict | None) -> str:
    if not switch:
        return ""
    parts = []
    for side, phase in switch["phases"].items():
        inv = phase["invite"]
        parts.append(f"{switch['setting']}={side} ({phase['seconds']} s, {inv['count']} invites): "
                     f"invite p50/p95/p99 {inv['p50']}/{inv['p95']}/{inv['p99']} ms, server CPU "
                     f"{phase['server_cpu_ms_per_cycle']} ms/cycle, total "
                     f"{phase['total_cpu_ms_per_cycle']} ms/cycle")
    return "\n    " + "\n    ".join(parts)


def attach_floor(cycle: dict, relay: dict) -> None:
    """Figures of a cycle run as ratios to the relay run at the same frame rate."""
    frame = relay["latency_ms"]["frame"]
    invite = cycle["latency_ms"]["invite"]
    setup = cycle["latency_ms"]["setup"]

    def ratio(a, b):
        return round(a / b, 2) if a is not None and b else None

    events = cycle.get("events_per_cycle") or 0
    cycle["floor"] = {
        "relay_run": relay["name"],
        "relay_frames_per_s": relay["frames_per_s"],
        "relay_latency_ms": frame,
        "invite_ratio": {key: ratio(invite[key], frame[key]) for key in ("p50", "p95", "p99")},
        "setup_ratio": {key: ratio(setup[key], frame[key]) for key in ("p50", "p99")},
        # server CPU per delivered event frame, against the relay's per forwarded frame
        "cpu_per_event_frame_ratio": ratio(
            cycle["server_cpu_ms_per_cycle"] / events if events and cycle["server_cpu_ms_per_cycle"] else None,
            relay["server_cpu_ms_per_frame"]),
        "peak_rss_ratio": ratio(max(cycle["peak_rss_kib"].get(f"node{n}", 0) for n in (1, 2)),
                                max(relay["peak_rss_kib"].values())),
    }
    path = RESULTS_DIR / f"{cycle['name']}.json"
    path.write_text(json.dumps(cycle, indent=1))


# ---- command line ----------------------------------------------------------------------------


def parse(argv: list[str]):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=["cycle", "relay", "idle"], default="cycle")
    parser.add_argument("--layer", choices=["pubsub", "redis", "memory"], default="pubsub")
    parser.add_argument("--nodes", type=int, choices=[1, 2], default=1)
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--rate", type=float, default=10.0,
                        help="target cycles/s (cycle) or frames/s (relay)")
    parser.add_argument("--cycles", type=int, default=None,
                        help="stop after this many cycles (cycle) or frames (relay)")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=5.0, help="unmeasured seconds first")
    parser.add_argument("--checkpoints", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1000, 5000, 10000], help="idle: connected users to measure at")
    parser.add_argument("--hold", type=float, default=12.0,
                        help="idle: seconds every socket stays idle before the probe call")
    parser.add_argument("--target", choices=["duet", "relay"], default="duet",
                        help="idle: Duet's call socket or the bare relay")
    parser.add_argument("--watch", choices=["peer", "none", "default"], default=None,
                        help="hello's watch list: the pair's peer (cycle default), none (idle "
                             "default), or the server's default list")
    parser.add_argument("--callee-frame", choices=["after-accept", "with-accept"],
                        default="after-accept",
                        help="cycle: when the callee's first remote frame comes. after-accept: "
                             "a media report after the accept (the shape of every earlier "
                             "result); with-accept: it came while ringing and the accept carries "
                             "it (CallAPI's fast first frame, Duet's client)")
    parser.add_argument("--event-batches", choices=["off", "on"], default="off",
                        help="cycle: hello's event_batches. on: a transaction's events come in one "
                             "frame, a frame's own in its reply, one ack per frame (Duet's "
                             "client); off: one frame and one ack per event (every earlier result)")
    parser.add_argument("--series", action="store_true",
                        help="cycle: keep every measured invite as (send time on the epoch "
                             "clock, latency ms) in the result, to see when the slow ones came")
    parser.add_argument("--switch", metavar="SETTING",
                        help="cycle: an A/B inside one run: the servers set this boolean setting "
                             "off and on in turns of --switch-period seconds "
                             "(bench/switch/sitecustomize.py), and the result gives each side's "
                             "invites and CPU per cycle (result['switch']); implies --series")
    parser.add_argument("--switch-period", type=float, default=2.0, metavar="SECONDS")
    parser.add_argument("--placement", choices=["split", "together"], default="split",
                        help="cycle, 2 nodes: split puts every caller on node 1 and every callee "
                             "on node 2 (every earlier result); together puts both users of a "
                             "pair on one node, the pairs spread over the nodes")
    parser.add_argument("--pin", choices=["off", "on"], default="off",
                        help="on: node i runs pinned to CPU core (i-1) mod cores, one web "
                             "process per core as the README's production topology has it "
                             "(Duet: manage.py serve --cpu; the relay: taskset); off: the "
                             "scheduler places every thread (every result before 2026-12-03 "
                             "17:45)")
    parser.add_argument("--timeout-ms", type=int, default=5000,
                        help="ring timeout asked in each call (5000: the timer tasks run inside "
                             "the measured window)")
    parser.add_argument("--population", type=int, default=10000,
                        help="users (with profiles and sessions) in the tables; the run drives "
                             "2 x pairs of them (cycle) or the idle checkpoints")
    parser.add_argument("--conn-max-age", type=int, default=None,
                        help="DATABASE_CONN_MAX_AGE for the servers (default: the settings' own)")
    parser.add_argument("--with-floor", action="store_true",
                        help="cycle: then run the relay at the cycle run's event frame rate and "
                             "record the ratios")
    parser.add_argument("--profile", nargs="?", const="all", choices=["all", "gil"],
                        help="py-spy record node1 in the window (gil: only samples of the thread "
                             "holding the GIL, i.e. where the CPU goes)")
    parser.add_argument("--memprobe", action="store_true",
                        help="idle: run node1 under tracemalloc (bench/memprobe.py) and report "
                             "where memory grew at each checkpoint")
    parser.add_argument("--env", action="append", help="NAME=VALUE for the servers (repeatable)")
    parser.add_argument("--label", default="")
    parser.add_argument("--summary-only", action="store_true",
                        help="only regenerate bench/results/README.md")
    args = parser.parse_args(argv)
    if args.layer == "memory" and args.nodes != 1:
        parser.error("the in-memory layer cannot join two processes: use --nodes 1")
    if args.watch is None:
        args.watch = "none" if args.scenario == "idle" else "peer"
    if args.switch:
        if args.scenario != "cycle":
            parser.error("--switch is for the cycle scenario")
        args.series = True
    return args


def raise_open_files_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by the servers too


def run_and_floor(argv: list[str]) -> dict:
    """One run from its arguments; a cycle run --with-floor is followed by its relay run."""
    args = parse(argv)
    command_line = ".venv/bin/python bench/run.py " + " ".join(argv)
    result = run_once(args, command_line)
    if args.with_floor and args.scenario == "cycle" and result.get("event_frames_per_s"):
        floor_args = parse(argv)
        floor_args.scenario = "relay"
        floor_args.rate = round(result["event_frames_per_s"])
        floor_args.cycles = None
        floor_args.profile = False
        relay = run_once(floor_args, command_line + "  # floor: the same with --scenario relay "
                         f"--rate {floor_args.rate:g}")
        attach_floor(result, relay)
        log(f"floor ratios: {result['floor']}")
    return result


def main(argv: list[str]) -> int:
    args = parse(argv)
    raise_open_files_limit()
    if not args.summary_only:
        run_and_floor(argv)
    from bench.summary import write_summary

    write_summary(RESULTS_DIR)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
