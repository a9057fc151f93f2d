"""Settings, read from the environment with an embedded default.

With no environment at all Duet runs self-contained: a SQLite file, the in-memory channel layer,
Celery on an in-memory broker with a worker inside the web process. Setting ``DATABASE_URL`` and
``REDIS_URL`` switches to the production topology (PostgreSQL, Redis channel layer and broker,
separate daphne, celery worker and celery beat processes). Every setting is listed in README.md.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("DUET_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)  # the embedded default's SQLite file lives here


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    word = value.strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise RuntimeError(f"{name} must be a yes/no value (1, true, yes, on / 0, false, no, off), "
                       f"not {value!r}")


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    number = float(value)
    if number < 0:
        raise RuntimeError(f"{name} must be 0 or more, not {value}")
    return number


def env_json(name: str, default):
    value = os.environ.get(name)
    return json.loads(value) if value not in (None, "") else default


DEBUG = env_bool("DJANGO_DEBUG", True)
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise RuntimeError("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off")
    SECRET_KEY = "insecure-development-key-do-not-use-in-production"
ALLOWED_HOSTS = [h.strip() for h in os.environ.get(
    "DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,testserver").split(",") if h.strip()]
CSRF_TRUSTED_ORIGINS = [o.strip() for o in os.environ.get(
    "DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "calls",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"
ASGI_APPLICATION = "project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Database connections stay open between frames and requests. Channels runs a process's
# database_sync_to_async calls on one thread, so this is one connection per daphne process (and
# one per Celery thread); closed after each frame, every frame paid for a new PostgreSQL backend
# (fork, authentication, catalog caches): 4x the PostgreSQL CPU of the whole call cycle
# (docs/benchmarks.md). Health checks replace a connection that died while idle.
DATABASE_CONN_MAX_AGE_S = env_int("DATABASE_CONN_MAX_AGE", 600)
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'duet.sqlite3'}",
        conn_max_age=DATABASE_CONN_MAX_AGE_S, conn_health_checks=True,
    )
}
# PostgreSQL through project/postgresql: Django's backend with the health check above run at most
# once per DATABASE_HEALTH_CHECK_INTERVAL_S on a connection (0: before every unit of work, as
# Django does), not as one extra round trip before every frame.
DATABASE_HEALTH_CHECK_INTERVAL_S = env_float("DATABASE_HEALTH_CHECK_INTERVAL", 1.0)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"]["ENGINE"] = "project.postgresql"
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # SQLite serialises writers; wait for the lock instead of failing, and let readers run
    # alongside a writer (WAL) so the in-process worker and the web threads do not collide.
    # synchronous=NORMAL is WAL's usual pairing: no fsync per commit (a crash of the process
    # loses nothing; a power cut may lose the last commits), which the embedded default can take.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"].setdefault("TEST", {})
# PostgreSQL's synchronous_commit for Duet's sessions. "on" (the default): a commit waits for its
# WAL flush (0.2-0.45 ms at the median on the benchmark machine's disk, longer when that virtual
# disk stalls: docs/benchmarks.md), so nothing committed is ever lost. "off": a
# PostgreSQL crash (not a Duet crash) may lose the last ~0.6 s of commits, including events that
# devices already received; an open socket then drops the re-numbered events as repeats until
# its device says hello again (README). Every call transaction commits in under 1 ms.
DATABASE_SYNCHRONOUS_COMMIT = os.environ.get("DATABASE_SYNCHRONOUS_COMMIT", "on")
if DATABASE_SYNCHRONOUS_COMMIT not in ("on", "off", "local", "remote_write", "remote_apply"):
    raise RuntimeError("DATABASE_SYNCHRONOUS_COMMIT must be on, off, local, "
                       "remote_write or remote_apply")
if (DATABASES["default"]["ENGINE"] == "project.postgresql"
        and DATABASE_SYNCHRONOUS_COMMIT != "on"):
    DATABASES["default"].setdefault("OPTIONS", {})["options"] = (
        f"-c synchronous_commit={DATABASE_SYNCHRONOUS_COMMIT}")
# PostgreSQL only: bind parameters on the server (psycopg's server-side cursors) instead of
# quoting them into the SQL in Python: 17 % less database-thread time per call cycle here
# (docs/benchmarks.md).
DATABASE_SERVER_SIDE_BINDING = env_bool("DATABASE_SERVER_SIDE_BINDING", True)
# PostgreSQL only: psycopg prepares a statement once it has run this many times on a connection,
# so PostgreSQL stops parsing and planning the few statements every call transaction repeats.
# Django turns this off by default (None); -1 keeps it off. Turn it off (with server-side
# binding) behind a pooler in transaction mode that cannot keep prepared statements (PgBouncer
# before 1.21).
DATABASE_PREPARE_THRESHOLD = env_int("DATABASE_PREPARE_THRESHOLD", 5)
if DATABASES["default"]["ENGINE"] == "project.postgresql":
    if DATABASE_SERVER_SIDE_BINDING:
        DATABASES["default"].setdefault("OPTIONS", {})["server_side_binding"] = True
    if DATABASE_PREPARE_THRESHOLD >= 0:
        DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = (
            DATABASE_PREPARE_THRESHOLD)
# PostgreSQL: a call transaction sends its writes in psycopg's pipeline mode and waits once for
# all of them (calls/rows.py, `pipelined`), instead of one round trip per statement.
DATABASE_PIPELINE = env_bool("DATABASE_PIPELINE", True)
# PostgreSQL, with the pipeline: a call transaction's writes (to the call, its timeline, the
# events, the profiles, the reply) go as one statement, their parts joined with WITH, instead of
# one statement each, and its COMMIT goes behind them in the same round trip; its BEGIN goes with
# its first statements, and statements are written to the socket only when an answer is awaited:
# two round trips and two writes per transaction (calls/rows.py, `flush_writes`,
# `pipelined(commit=True)`, `_send_when_awaited`; docs/benchmarks.md).
DATABASE_COMBINE_WRITES = env_bool("DATABASE_COMBINE_WRITES", True)
if os.environ.get("DUET_TEST_DB_NAME"):
    # Tests name their own database so that parallel runs never share one (for SQLite: a file,
    # which a live server in another thread or process can open too).
    DATABASES["default"].setdefault("TEST", {})["NAME"] = os.environ["DUET_TEST_DB_NAME"]

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [
    BASE_DIR / "frontend",
    # The Agora Web SDK, installed from npm by `make install`: served by us, never from a CDN.
    ("vendor/agora-rtc-sdk-ng", BASE_DIR / "node_modules" / "agora-rtc-sdk-ng"),
]
WHITENOISE_USE_FINDERS = DEBUG  # serve straight from frontend/ in development, no collectstatic
WHITENOISE_AUTOREFRESH = DEBUG

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "lobby"
LOGOUT_REDIRECT_URL = "login"

# ---- Redis: channel layer and Celery broker ---------------------------------------------------

REDIS_URL = os.environ.get("REDIS_URL", "")
# redis-py 8 times a socket out after 5 s by default, exactly the channel layer's blocking read:
# an idle consumer then crashes (django/channels_redis#422). Give reads more room than that.
REDIS_SOCKET_TIMEOUT_S = 30
# redis-py 8 raises instead of waiting once a pool holds its default of 100 connections.
REDIS_MAX_CONNECTIONS = env_int("DUET_REDIS_MAX_CONNECTIONS", 1000)

CHANNEL_LAYER_KIND = os.environ.get("DUET_CHANNEL_LAYER", "pubsub" if REDIS_URL else "memory")
_redis_host = {"address": REDIS_URL, "socket_timeout": REDIS_SOCKET_TIMEOUT_S,
               "socket_connect_timeout": 5, "max_connections": REDIS_MAX_CONNECTIONS}
if CHANNEL_LAYER_KIND == "memory":
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
elif CHANNEL_LAYER_KIND == "pubsub":
    CHANNEL_LAYERS = {"default": {
        # channels-redis's pub/sub layer, plus one Redis round trip for a transaction's messages
        "BACKEND": "project.channel_layer.PubSubChannelLayer",
        "CONFIG": {"hosts": [_redis_host], "prefix": os.environ.get("DUET_LAYER_PREFIX", "duet")},
    }}
elif CHANNEL_LAYER_KIND == "redis":
    CHANNEL_LAYERS = {"default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [_redis_host], "prefix": os.environ.get("DUET_LAYER_PREFIX", "duet"),
                   # Over capacity the layer drops messages silently; Duet re-sends unacknowledged
                   # events, but a roomy queue avoids needless drops under bursts.
                   "capacity": 1000, "expiry": 60},
    }}
else:
    raise RuntimeError(f"DUET_CHANNEL_LAYER must be memory, pubsub or redis, not {CHANNEL_LAYER_KIND!r}")

# Events for a user whose sockets are all on the publishing process skip Redis (pubsub layer on
# PostgreSQL; calls.events.local_delivery_on). Turn it off while processes of a version without
# it still serve sockets: their hellos do not take the profile lock the rule relies on.
DUET_LOCAL_DELIVERY = env_bool("DUET_LOCAL_DELIVERY", True)

# ---- Celery ---------------------------------------------------------------------------------

CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", REDIS_URL or "memory://")
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND", None)
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("DUET_CELERY_QUEUE", "duet")
CELERY_TASK_ACKS_LATE = True  # a worker that dies mid-task leaves the task to another worker
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 4
# Celery's Django fixup closes every database connection before and after each task unless this
# is set, and then force-closes them every 2 x this many tasks: a new PostgreSQL backend (fork,
# authentication, catalog caches) for each ring timer. The worker instead closes stale
# connections around each task as Django does around a request (project/celery.py), so the
# fixup's count is set out of reach.
CELERY_DB_REUSE_MAX = 2**62
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # Ring timers are at most two minutes away; redeliver unacknowledged tasks well after that.
    "visibility_timeout": 3600,
}
# Housekeeping ends calls whose deadline passed but whose timer task was lost (worker crash,
# broker restart), drops connections of crashed processes and prunes old delivery records.
# Beat runs it; the timer tasks are the fast path, this is the guarantee.
DUET_HOUSEKEEPING_INTERVAL_S = env_int("DUET_HOUSEKEEPING_INTERVAL_S", 5)
CELERY_BEAT_SCHEDULE = {
    "housekeeping": {"task": "calls.tasks.housekeeping_task",
                     "schedule": float(DUET_HOUSEKEEPING_INTERVAL_S)},
}
# Run a Celery worker (and the sweeper) inside the web process: the embedded default, because an
# in-memory broker is only reachable from its own process.
DUET_EMBEDDED_WORKER = env_bool("DUET_EMBEDDED_WORKER", CELERY_BROKER_URL.startswith("memory://"))

# ---- Calls ----------------------------------------------------------------------------------

# CallAPI's default ring time; a call may ask for 5 s to 120 s.
DUET_RING_TIMEOUT_MS = env_int("DUET_RING_TIMEOUT_MS", 15000)
# Ring timers run by slot (calls.timers): a call still not connected at its deadline ends at the
# end of the slot holding it, one Celery task per slot and web process instead of one per call.
DUET_RING_TIMER_SLOT_MS = env_int("DUET_RING_TIMER_SLOT_MS", 250)
if not 1 <= DUET_RING_TIMER_SLOT_MS <= 5000:
    raise RuntimeError("DUET_RING_TIMER_SLOT_MS must be 1 to 5000 (milliseconds)")
# WebRTC ICE servers handed to clients, e.g. '[{"urls": "stun:stun.example.org:3478"}]'.
# Empty is right on loopback and LANs; production behind NAT needs a STUN and a TURN server.
DUET_ICE_SERVERS = env_json("DUET_ICE_SERVERS", [])
# Agora: when both are set, calls use the Agora Web SDK with tokens made here; otherwise WebRTC.
AGORA_APP_ID = os.environ.get("AGORA_APP_ID", "")
AGORA_APP_CERTIFICATE = os.environ.get("AGORA_APP_CERTIFICATE", "")
AGORA_TOKEN_TTL_S = env_int("AGORA_TOKEN_TTL_S", 3600)
# Threads (and database connections) per web process for the sockets' database work. Two on
# PostgreSQL: with prepared statements a node's one thread became its bottleneck near 45 call
# cycles/s, two carry 50-55 on this machine's two cores (docs/benchmarks.md). One on SQLite,
# which takes one writer at a time anyway.
DUET_DATABASE_THREADS = env_int("DUET_DATABASE_THREADS",
                                2 if DATABASES["default"]["ENGINE"] == "project.postgresql" else 1)
# How long a participant whose every device dropped may take to come back.
DUET_RECONNECT_GRACE_S = env_int("DUET_RECONNECT_GRACE_S", 20)
# Devices refresh their presence this often; one silent for three intervals counts as gone.
DUET_HEARTBEAT_S = env_int("DUET_HEARTBEAT_S", 15)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("DUET_LOG_LEVEL", "INFO")},
    "loggers": {"django.channels.server": {"level": "WARNING"}},
}
