"""Settings, read only from the environment, with safe embedded defaults.

With nothing set, the control plane runs on a SQLite file and a Celery broker that needs no server (a kombu
transport on another SQLite file under ``var/``, ``controlplane/broker.py``), so ``make run`` works on a fresh
machine. Every file the run command writes lives under ``var/``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("CONTROLPLANE_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def envbool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (true/false), not {value!r}")


def _envnumber(name: str, default: Any, cast: Any, kind: str) -> Any:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return cast(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be {kind}, not {value!r}") from exc


def envint(name: str, default: int) -> int:
    return _envnumber(name, default, int, "an integer")


def envfloat(name: str, default: float) -> float:
    return _envnumber(name, default, float, "a number")


def envlist(name: str, default: str) -> list[str]:
    return [part.strip() for part in os.environ.get(name, default).split(",") if part.strip()]


def envsecret(name: str) -> str | None:
    """A secret from NAME, or from the file named by NAME_FILE (Docker/Kubernetes secrets)."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        return Path(path).read_text().strip()
    return os.environ.get(name) or None


DEBUG = envbool("DEBUG", True)
SECRET_KEY = envsecret("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is false")
    SECRET_KEY = "insecure-development-key-only-for-debug-mode-0123456789abcdef"

# Keys that encrypt secrets at rest (kubeconfigs, dashboard and Prometheus credentials, webhook secrets): Fernet
# keys, comma-separated, newest first (older ones still decrypt; `manage.py rotate_secrets` re-encrypts).
# Make one with: python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"
FIELD_ENCRYPTION_KEYS = [k.strip() for k in (envsecret("FIELD_ENCRYPTION_KEYS") or "").split(",") if k.strip()]
if not FIELD_ENCRYPTION_KEYS:
    if not DEBUG:
        raise ImproperlyConfigured("FIELD_ENCRYPTION_KEYS must be set when DEBUG is false (secrets are encrypted)")
    import base64
    import hashlib

    # Development only: a key derived from the (development) secret key, so make run needs no setup.
    _derived = hashlib.sha256(b"fields:" + SECRET_KEY.encode()).digest()
    FIELD_ENCRYPTION_KEYS = [base64.urlsafe_b64encode(_derived).decode()]
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]" if not DEBUG else "*")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_filters",
    "apps.core",
    "apps.teams",
    "apps.clusters",
    "apps.quotas",
    "apps.applications",
    "apps.audit",
    "apps.compaction",
    "apps.alerts",
    "apps.metrics",
    "apps.catalog",
    "apps.deploys",
    "apps.rollouts",
    "apps.sso",
    "apps.dashboard",
    "apps.localdev",
]

MIDDLEWARE = [
    "apps.core.middleware.ClientAddressMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "apps.core.middleware.RequestIdMiddleware",
    "apps.core.middleware.RejectNulBytesMiddleware",
    "apps.core.middleware.BodyLimitMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "apps.core.middleware.DatabaseUnavailableMiddleware",
]

ROOT_URLCONF = "controlplane.urls"
WSGI_APPLICATION = "controlplane.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "apps.sso.context_processors.sign_in_options",
                "apps.teams.context_processors.principal",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'controlplane.sqlite3'}",
        conn_max_age=envint("DB_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web, worker and beat share one SQLite file: wait for locks instead of failing at once.
    # Write-ahead logging: readers never wait for the writer, and a commit is one append instead of a journal
    # rewrite (NORMAL sync is durable across a crash of the process; the embedded default is for small installs).
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
    # A file, not memory, so the test server, Celery worker threads and tests share one database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Single sign-on with OpenID Connect (apps/sso), on when OIDC_ISSUER is set: discovery from the issuer, the
# authorization code flow with PKCE, state and nonce; users are created at their first sign-in.
OIDC_ISSUER = os.environ.get("OIDC_ISSUER", "")
OIDC_CLIENT_ID = os.environ.get("OIDC_CLIENT_ID", "")
OIDC_CLIENT_SECRET = envsecret("OIDC_CLIENT_SECRET") or ""
OIDC_SCOPES = os.environ.get("OIDC_SCOPES", "openid email profile")
OIDC_PROVIDER_NAME = os.environ.get("OIDC_PROVIDER_NAME", "company sign-in")
# The ID token claim that lists the person's groups, and which groups make team members (group=team:role,...) and
# platform staff. Both are re-applied at every sign-in.
OIDC_GROUPS_CLAIM = os.environ.get("OIDC_GROUPS_CLAIM", "groups")
OIDC_GROUP_TEAMS = os.environ.get("OIDC_GROUP_TEAMS", "")
OIDC_STAFF_GROUP = os.environ.get("OIDC_STAFF_GROUP", "")
OIDC_CLOCK_SKEW_S = envint("OIDC_CLOCK_SKEW_S", 60)
OIDC_TIMEOUT_S = envint("OIDC_TIMEOUT_S", 10)
# Anyone may create an account with a password (sign-up page, invitation links). Off: only through sign-on.
PASSWORD_SIGNUP = envbool("PASSWORD_SIGNUP", True)

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard:home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
WHITENOISE_USE_FINDERS = DEBUG  # serve straight from static/ in development, from STATIC_ROOT otherwise
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# 1 MiB is ample for any application spec; larger bodies are refused before parsing.
DATA_UPLOAD_MAX_MEMORY_SIZE = envint("DATA_UPLOAD_MAX_MEMORY_SIZE", 1024 * 1024)

# Who is asking, with what authority: one object per request (apps/teams/principal.py).
PRINCIPAL_FACTORY = "apps.teams.principal.principal_of"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "apps.teams.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "apps.core.pagination.Pagination",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PARSER_CLASSES": [
        "apps.core.pagination.SafeJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "apps.core.exceptions.exception_handler",
    "DEFAULT_THROTTLE_RATES": {"auth": os.environ.get("AUTH_THROTTLE_RATE", "60/min")},
    "NUM_PROXIES": 0,  # REMOTE_ADDR, which ClientAddressMiddleware sets from trusted proxies only
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Ray Serve control plane API",
    "DESCRIPTION": "Multi-tenant control plane for Ray Serve: teams, clusters, quotas, applications.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Quota requests and join requests share one set of states (pending, approved, rejected).
    "ENUM_NAME_OVERRIDES": {"RequestStateEnum": "apps.core.roles.RequestState"},
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Celery: Redis when CELERY_BROKER_URL is set, otherwise the embedded broker on a SQLite file (no server).
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or f"sqlite://{VAR_DIR / 'broker.sqlite3'}"
if CELERY_BROKER_URL.startswith("sqlite://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {"polling_interval": 0.01}
CELERY_TASK_ALWAYS_EAGER = envbool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_TIME_LIMIT = envint("CELERY_TASK_TIME_LIMIT", 300)
CELERY_TASK_SOFT_TIME_LIMIT = envint("CELERY_TASK_SOFT_TIME_LIMIT", 240)
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Webhook and mail deliveries wait on other people's servers: they run on their own queue, consumed by their own
# worker (make run, compose and Kubernetes start one), so a slow receiver never delays a push.
CELERY_TASK_ROUTES = {"workers.tasks.alerts.deliver": {"queue": "webhooks"}}
CELERY_TASK_ACKS_LATE = True
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Keep reconnecting when the broker goes away instead of giving up; desired state is in the database anyway.
CELERY_BROKER_CONNECTION_RETRY = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None

# Tokens minted by POST /api/v1/auth/token/ expire after this many days (0: never).
API_LOGIN_TOKEN_TTL_DAYS = envint("API_LOGIN_TOKEN_TTL_DAYS", 30)

# Rate limits hold across processes: a cache every web process shares: Redis (CACHE_URL, a database of its own,
# not the broker's), else a table in the database.
CACHE_URL = os.environ.get("CACHE_URL", "")
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL, "KEY_PREFIX": "cp"}
        if CACHE_URL.startswith(("redis://", "rediss://"))
        else {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "controlplane_cache"}
    )
}
# Reverse proxies whose X-Forwarded-For is believed (IPs or CIDRs). Nobody else can choose their own address.
TRUSTED_PROXIES = envlist("TRUSTED_PROXIES", "")

# How often beat reconciles every cluster and refreshes observed status (seconds).
RECONCILE_INTERVAL_S = envint("RECONCILE_INTERVAL_S", 20)
# How often beat scrapes every cluster's metrics endpoints (seconds).
SCRAPE_INTERVAL_S = envint("SCRAPE_INTERVAL_S", 15)
SCRAPE_DEADLINE_S = envint("SCRAPE_DEADLINE_S", 10)  # every target of a scrape answers within this, or counts failed
# Ask each metrics endpoint for its page gzipped: 35x fewer bytes on the wire, about 0.6 ms of CPU per MB of text.
METRICS_SCRAPE_GZIP = envbool("METRICS_SCRAPE_GZIP", True)
SCRAPE_LEASE_S = envint("SCRAPE_LEASE_S", 60)
# Clusters whose metrics_source is prometheus: Ray's series are PromQL queries to their query endpoint.
PROMETHEUS_TIMEOUT_S = envint("PROMETHEUS_TIMEOUT_S", 5)  # a slower answer is an empty chart with the reason
PROMETHEUS_CACHE_S = envint("PROMETHEUS_CACHE_S", 15)  # results (and a failure) are reused this long
# rate()/increase() windows are at least this wide: four scrape intervals of the Prometheus (15 s by default).
PROMETHEUS_MIN_RANGE_S = envint("PROMETHEUS_MIN_RANGE_S", 60)
# How often beat applies each cluster's compaction policy (seconds).
COMPACTION_INTERVAL_S = envint("COMPACTION_INTERVAL_S", 300)
# HTTP timeout for calls to a Ray dashboard (seconds).
RAY_HTTP_TIMEOUT_S = envint("RAY_HTTP_TIMEOUT_S", 10)  # a total deadline per call, not per read
RAY_MAX_ANSWER_BYTES = envint("RAY_MAX_ANSWER_BYTES", 64 * 1024 * 1024)  # more is refused, never read
# How long a per-cluster push lock is held at most before another worker may take it (seconds).
CLUSTER_LOCK_TTL_S = envint("CLUSTER_LOCK_TTL_S", 120)
# Canary rollouts: how often a cluster's tick chain moves its rollouts along (judges the step, advances, rolls
# back), in seconds. The chain runs only while the cluster has a rollout.
ROLLOUT_TICK_S = envint("ROLLOUT_TICK_S", 5)
# How long the splitter and the new version stay beside the app after it took its route back (requests already
# forwarded finish), in seconds.
ROLLOUT_GRACE_S = envint("ROLLOUT_GRACE_S", 15)
# A runtime_env for the splitter application, for clusters where the control plane's ``workers.on_cluster`` package
# is not importable already (for example {"py_modules": ["https://.../on_cluster.zip"]}); JSON.
ROLLOUT_SPLITTER_RUNTIME_ENV = json.loads(os.environ.get("ROLLOUT_SPLITTER_RUNTIME_ENV") or "{}")

if not DEBUG:
    SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", True)
    # Probes and Prometheus scrape over plain HTTP inside the cluster network.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_CONTENT_TYPE_NOSNIFF = True
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
METRICS_TOKEN = envsecret("METRICS_TOKEN") or ""
# Collectors of numbers kept in the database, added to every /metrics answer.
METRICS_COLLECTORS = ["apps.deploys.metrics.ClusterCollector"]
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "serve-control-plane@localhost")
# The address people open the dashboard at: links in notifications point there.
# Links in mails and webhooks lead here: the dashboard (make run serves it on 8088; Serve's own port answers 404).
PUBLIC_URL = os.environ.get("PUBLIC_URL", "http://127.0.0.1:8088")

# Alerts: how often beat evaluates every rule (and re-enqueues deliveries due for a retry), and webhook delivery.
ALERT_INTERVAL_S = envint("ALERT_INTERVAL_S", 30)
# Housekeeping (hourly): the push history and the audit log stay bounded at a fleet's size.
# A push that found more writes arrived while it ran waits for them to pause before the next round.
PUSH_COALESCE_S = envfloat("PUSH_COALESCE_S", 0.2)
PUSH_COALESCE_MAX_S = envfloat("PUSH_COALESCE_MAX_S", 1.0)
SYNC_RUN_RETENTION_DAYS = envint("SYNC_RUN_RETENTION_DAYS", 90)
SYNC_RUN_SNAPSHOTS_KEPT = envint("SYNC_RUN_SNAPSHOTS_KEPT", 20)  # per cluster: older runs keep no config copy
AUDIT_RETENTION_DAYS = envint("AUDIT_RETENTION_DAYS", 400)  # 0 keeps every event
# Webhooks to loopback, private and link-local addresses are refused (server-side request forgery) unless set.
WEBHOOK_ALLOW_PRIVATE = envbool("WEBHOOK_ALLOW_PRIVATE", False)
WEBHOOK_TIMEOUT_S = envint("WEBHOOK_TIMEOUT_S", 5)
WEBHOOK_RETRY_BASE_S = envint("WEBHOOK_RETRY_BASE_S", 10)  # first retry after about this (with jitter), doubling
WEBHOOK_RETRY_MAX_S = envint("WEBHOOK_RETRY_MAX_S", 3600)
WEBHOOK_MAX_ATTEMPTS = envint("WEBHOOK_MAX_ATTEMPTS", 6)  # per notification
WEBHOOK_DISABLE_AFTER = envint("WEBHOOK_DISABLE_AFTER", 10)  # failed attempts in a row disable an endpoint

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_id": {"()": "apps.core.middleware.RequestIdFilter"},
        "secrets": {"()": "apps.core.secrets.SecretRedactingFilter"},
    },
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        "json": {"()": "apps.core.middleware.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": os.environ.get("LOG_FORMAT", "plain" if DEBUG else "json"),
            "filters": ["request_id", "secrets"],
        },
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # The embedded broker's URL names a file, not a host: kombu's "No hostname was supplied" is noise there.
        **({"kombu.connection": {"level": "ERROR"}} if CELERY_BROKER_URL.startswith("sqlite://") else {}),
    },
}
