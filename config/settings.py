"""Parley settings: one module, read from the environment.

With no variables set this is the embedded default (SQLite, in-memory channel
layer, Celery tasks run in-process, console email, DEBUG off). The variables
that switch to the real parts are listed in docs/running.md.
"""

import base64
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import django_stubs_ext
import environ
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from csp.constants import NONCE, NONE, SELF, WASM_UNSAFE_EVAL
from django.core.exceptions import ImproperlyConfigured

django_stubs_ext.monkeypatch()  # lets Django's generic classes be subscripted at run time

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"  # local state of the embedded default; git-ignored

env = environ.Env()

DJANGO_ENV = env.str("DJANGO_ENV", default="development")
if DJANGO_ENV not in {"development", "test", "production"}:
    raise ImproperlyConfigured("DJANGO_ENV must be development, test or production")
PRODUCTION = DJANGO_ENV == "production"
TESTING = DJANGO_ENV == "test"

DEBUG = env.bool("DEBUG", default=False) and not PRODUCTION


def _kept_in_var(name: str, make: Callable[[], str]) -> str:
    """A secret made once and kept in var/ (outside production), so that sessions and
    push subscriptions survive restarts of `make run`."""
    key_file = VAR_DIR / name
    if not key_file.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        key_file.write_text(make())
        key_file.chmod(0o600)
    return key_file.read_text().strip()


if PRODUCTION:
    SECRET_KEY = env.str("SECRET_KEY", default="")
    if len(SECRET_KEY) < 50:
        raise ImproperlyConfigured("Production needs SECRET_KEY (50 characters or more).")
else:
    SECRET_KEY = env.str("SECRET_KEY", default="") or _kept_in_var(
        "secret_key", lambda: secrets.token_urlsafe(50)
    )

# Keys the franking stamp (PROTOCOL.md section 3); separate from SECRET_KEY so it
# can be rotated on its own schedule.
FRANKING_SECRET = env.str("FRANKING_SECRET", default="") or SECRET_KEY
if PRODUCTION and FRANKING_SECRET == SECRET_KEY:
    raise ImproperlyConfigured("Production needs its own FRANKING_SECRET.")

ALLOWED_HOSTS = env.list(
    "ALLOWED_HOSTS", default=[] if PRODUCTION else ["localhost", "127.0.0.1", "[::1]"]
)
if PRODUCTION and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("Production needs ALLOWED_HOSTS.")
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",
    "moderation.apps.PanelAdminConfig",  # the Django admin as the moderation panel
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "common",
    "accounts",
    "realtime",
    "messaging",
    "calls",
    "notifications",
    "moderation",
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
    "csp.middleware.CSPMiddleware",
    "common.middleware.SignedInPagesNotCachedMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = "config.wsgi.application"

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
                "csp.context_processors.nonce",
                "notifications.context_processors.notifications",
                "moderation.context_processors.warnings",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------

_sqlite_path = VAR_DIR / "parley.sqlite3"
DATABASES: dict[str, dict[str, Any]] = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{_sqlite_path}")
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Django's backend with a flush that keeps the audit log's guards (moderation.db).
    DATABASES["default"]["ENGINE"] = "common.sqlite"
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            # WAL lets the test process and a live Daphne process share the file;
            # IMMEDIATE makes writers queue instead of failing with "database is locked".
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
        }
    )
    # A file (not :memory:) so that live server processes started by tests see it;
    # one per test run, so that two runs on one checkout do not share it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test_parley_{os.getpid()}.sqlite3")}
else:
    # Tests close connections after each use so that none outlives the test database.
    DATABASES["default"].setdefault(
        "CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=0 if TESTING else 60)
    )
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: channel layer, Celery broker, cache ----------------------------------------------

REDIS_URL = env.str("REDIS_URL", default="")
CACHE_REDIS_URL = env.str("CACHE_REDIS_URL", default="") or REDIS_URL

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            # Pub/sub: an event is one PUBLISH, pushed to the processes subscribed to its
            # group, instead of the list layer's three commands and a script per group and
            # one blocking pop per event received (docs/performance.md). The layer is a
            # doorbell either way: an event missed is recovered by sync.
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {
                "hosts": [{"address": REDIS_URL, "socket_connect_timeout": 5}],
                # Pub/sub channels are shared by every database of a Redis server: the
                # database number keeps two deployments on one server (or the tests and
                # the bench) from hearing each other's events.
                "prefix": f"parley{urlparse(REDIS_URL).path.strip('/') or '0'}",
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

if CACHE_REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": CACHE_REDIS_URL,
            "KEY_PREFIX": "parley",
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TIMEZONE = "UTC"
# Celery's Django fixup closes every database connection after every task unless this
# is set: a new PostgreSQL connection per task cost the worker more than many of its
# tasks (docs/performance.md). With it, config/celery.py closes them as Django does
# around a request: when unusable, or older than CONN_MAX_AGE (0 in tests).
CELERY_DB_REUSE_MAX = 1000
# A task taken by a worker that dies before acknowledging it goes back to the queue
# after this long (acks_late); it must exceed the longest countdown we schedule.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600)
}
CELERY_BEAT_SCHEDULE = {
    "erase-expired-messages": {
        "task": "messaging.erase_expired_messages",
        "schedule": env.float("ERASE_EXPIRED_EVERY_SECONDS", default=10.0),
    },
    "close-stale-calls": {
        "task": "calls.close_stale_calls",
        "schedule": env.float("CLOSE_STALE_CALLS_EVERY_SECONDS", default=30.0),
    },
    "send-notification-digests": {
        "task": "notifications.send_digests",
        "schedule": env.float("DIGEST_EVERY_SECONDS", default=3600.0),
    },
    "prune-notifications": {
        "task": "notifications.prune",
        "schedule": env.float("PRUNE_NOTIFICATIONS_EVERY_SECONDS", default=6 * 3600.0),
    },
}

# --- Auth -----------------------------------------------------------------------------------

AUTH_USER_MODEL = "accounts.User"
# Handles are unique without regard to case (a constraint on Lower(handle)), which
# Django's check does not recognise as unique.
SILENCED_SYSTEM_CHECKS = ["auth.W004"]
AUTHENTICATION_BACKENDS = ["accounts.backends.HandleOrEmailBackend"]
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "home"

PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
if TESTING:
    # Argon2 still, with small costs: the suite creates hundreds of users.
    PASSWORD_HASHERS.insert(0, "accounts.hashers.FastArgon2PasswordHasher")

AUTH_PASSWORD_VALIDATORS = [
    {
        "NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator",
        "OPTIONS": {"user_attributes": ("handle", "display_name", "email")},
    },
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 10},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# Brute-force protection (accounts.services.login_*): failures counted in the cache.
LOGIN_LOCKOUT = {
    "ACCOUNT_FAILURES": env.int("LOGIN_ACCOUNT_FAILURES", default=5),
    "ADDRESS_FAILURES": env.int("LOGIN_ADDRESS_FAILURES", default=20),
    "WINDOW_SECONDS": env.int("LOGIN_LOCKOUT_SECONDS", default=15 * 60),
}

# --- API ------------------------------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_THROTTLE_CLASSES": [
        "common.throttling.AnonThrottle",
        "common.throttling.UserThrottle",
    ],
    "DEFAULT_PAGINATION_CLASS": "common.pagination.Pagination",
    "PAGE_SIZE": 50,
    # drf-spectacular's, with the error responses every operation may give.
    "DEFAULT_SCHEMA_CLASS": "common.schema.AutoSchema",
    "EXCEPTION_HANDLER": "common.api.exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "common.parsers.JSONParser",  # DRF's, with a 400 for JSON nested too deep
        "rest_framework.parsers.MultiPartParser",
    ],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # How many proxies in front of us append to X-Forwarded-For; 0 trusts none of it.
    "NUM_PROXIES": env.int("NUM_PROXIES", default=0),
}

# Requests per period, per kind of request (common.throttling reads these at call time).
API_THROTTLE_RATES = {
    "anon": env.str("THROTTLE_ANON", default="60/min"),
    "user": env.str("THROTTLE_USER", default="600/min"),
    "auth": env.str("THROTTLE_AUTH", default="20/min"),
    "search": env.str("THROTTLE_SEARCH", default="60/min"),
    "key_directory": env.str("THROTTLE_KEY_DIRECTORY", default="120/min"),
    "keys_write": env.str("THROTTLE_KEYS_WRITE", default="30/min"),
    "device_link_read": env.str("THROTTLE_DEVICE_LINK_READ", default="120/min"),
    "social": env.str("THROTTLE_SOCIAL", default="120/min"),
    "messaging": env.str("THROTTLE_MESSAGING", default="600/min"),
    "attachments": env.str("THROTTLE_ATTACHMENTS", default="120/min"),
    "reports": env.str("THROTTLE_REPORTS", default="20/min"),
    "calls": env.str("THROTTLE_CALLS", default="120/min"),
    "notifications": env.str("THROTTLE_NOTIFICATIONS", default="300/min"),
    "push_subscriptions": env.str("THROTTLE_PUSH_SUBSCRIPTIONS", default="20/min"),
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Parley API",
    "DESCRIPTION": (
        "The mobile API of Parley. Every error has the shape "
        '`{"error": {"code": "...", "message": "...", "field": "..."}}`. '
        "Authenticate with `Authorization: Bearer <token>`."
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

# --- Devices, keys, profile limits ----------------------------------------------------------

AVATAR_MAX_BYTES = 2 * 1024 * 1024
AVATAR_MAX_PIXELS = 4096
BACKUP_MAX_BYTES = 4096
ATTACHMENT_MAX_BYTES = env.int("ATTACHMENT_MAX_BYTES", default=25 * 1024 * 1024)
MESSAGE_MAX_CIPHERTEXT_BYTES = 64 * 1024  # PROTOCOL.md section 3
MAX_ACTIVE_DEVICES = 20

# --- Calls (docs/calls.md) -----------------------------------------------------------------

# TURN server(s) with coturn's use-auth-secret; empty means none (relay-only calls are
# then refused rather than placed with an address showing).
TURN_URLS = env.list("TURN_URLS", default=[])
TURN_SECRET = env.str("TURN_SECRET", default="")
TURN_CREDENTIAL_SECONDS = env.int("TURN_CREDENTIAL_SECONDS", default=6 * 3600)
CALL_RING_SECONDS = env.int("CALL_RING_SECONDS", default=60)
CALL_INVITES_PER_MINUTE = env.int("CALL_INVITES_PER_MINUTE", default=10)
CALL_STALE_SECONDS = env.int("CALL_STALE_SECONDS", default=120)

# --- Background work ------------------------------------------------------------------------

# Eager Celery (the embedded default) would run a countdown task at once: ring timeouts
# and email windows run on timers of the server process instead (common.tasks.run_later).
TASK_TIMERS_IN_PROCESS = env.bool("TASK_TIMERS_IN_PROCESS", default=True)
# Nor does it have Celery beat: the server process runs CELERY_BEAT_SCHEDULE itself
# (common.periodic).
SCHEDULE_IN_PROCESS = env.bool("SCHEDULE_IN_PROCESS", default=True)

# --- Realtime -------------------------------------------------------------------------------

REALTIME_MAX_FRAME_BYTES = 256 * 1024
# Threads per server process that run socket frames (each keeps its own database
# connection): frames of this many sockets run at once (docs/realtime.md).
REALTIME_FRAME_THREADS = env.int("REALTIME_FRAME_THREADS", default=8)
# A token never goes in a URL; the Origin check guards cookie-authenticated sockets.
REALTIME_ALLOWED_ORIGINS = env.list("REALTIME_ALLOWED_ORIGINS", default=[])

# --- I18N, static, media --------------------------------------------------------------------

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(VAR_DIR / "staticfiles")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if PRODUCTION
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = not PRODUCTION
if not PRODUCTION:
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns when it is missing
MEDIA_URL = "/media/"
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(VAR_DIR / "media")))

# --- Notifications (docs/notifications.md) -------------------------------------------------

# The site's address, for links in emails and pushes.
SITE_URL = env.str("SITE_URL", default="http://localhost:8000").rstrip("/")
# A socket that is not refreshed for this long no longer counts as "online".
PRESENCE_TTL_SECONDS = env.int("PRESENCE_TTL_SECONDS", default=60)
# An email waits this long after the first message of a window, so that what follows
# is told in the same email (and nothing at all if it was read meanwhile).
NOTIFY_EMAIL_DELAY_SECONDS = env.int("NOTIFY_EMAIL_DELAY_SECONDS", default=300)
# How long a delivery task holds its claim on a delivery while it sends (longer than
# EMAIL_TIMEOUT and WEB_PUSH_TIMEOUT_SECONDS); a task of a dead worker frees it then.
DELIVERY_LEASE_SECONDS = env.int("DELIVERY_LEASE_SECONDS", default=120)
# The digest tells of notifications unread for this long that no email told yet.
DIGEST_AFTER_SECONDS = env.int("DIGEST_AFTER_SECONDS", default=12 * 3600)
NOTIFICATIONS_KEEP_READ_DAYS = env.int("NOTIFICATIONS_KEEP_READ_DAYS", default=30)
NOTIFICATIONS_KEEP_DAYS = env.int("NOTIFICATIONS_KEEP_DAYS", default=90)
PUSH_SUBSCRIPTION_FAILING_DAYS = env.int("PUSH_SUBSCRIPTION_FAILING_DAYS", default=7)
# Web Push (RFC 8030/8291/8292). The VAPID key is a P-256 private key, base64url of its
# 32 bytes; in development and tests one is made and kept in var/.
VAPID_SUBJECT = env.str("VAPID_SUBJECT", default="mailto:admin@localhost")
# The server posts to push endpoints the browsers name: only to these push services'
# hosts (and their subdomains), over HTTPS, so an endpoint cannot point inside our network.
WEB_PUSH_HOSTS = env.list(
    "WEB_PUSH_HOSTS",
    default=[
        "fcm.googleapis.com",
        "updates.push.services.mozilla.com",
        "push.services.mozilla.com",
        "notify.windows.com",
        "push.apple.com",
    ],
)
WEB_PUSH_ALLOW_HTTP = env.bool("WEB_PUSH_ALLOW_HTTP", default=False) and not PRODUCTION
WEB_PUSH_TIMEOUT_SECONDS = env.float("WEB_PUSH_TIMEOUT_SECONDS", default=10.0)


def _b64u(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _new_vapid_key() -> str:
    number = ec.generate_private_key(ec.SECP256R1()).private_numbers().private_value
    return _b64u(number.to_bytes(32, "big"))


def _vapid_public_key(private_key: str) -> str:
    """The application server key browsers subscribe with: the uncompressed point."""
    try:
        raw = base64.urlsafe_b64decode(private_key + "=" * (-len(private_key) % 4))
        key = ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
    except ValueError as exc:
        raise ImproperlyConfigured("VAPID_PRIVATE_KEY is not a P-256 key (base64url).") from exc
    return _b64u(
        key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    )


VAPID_PRIVATE_KEY = env.str("VAPID_PRIVATE_KEY", default="") or (
    "" if PRODUCTION else _kept_in_var("vapid_private_key", _new_vapid_key)
)
# Empty when there is no key: the site then offers no push.
VAPID_PUBLIC_KEY = _vapid_public_key(VAPID_PRIVATE_KEY) if VAPID_PRIVATE_KEY else ""

# --- Email ----------------------------------------------------------------------------------

EMAIL_CONFIG = env.email_url("EMAIL_URL", default="memorymail://" if TESTING else "consolemail://")
globals().update(EMAIL_CONFIG)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Parley <no-reply@localhost>")
# A mail server that stops answering must not hold a worker forever.
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=30)

# --- Security headers -----------------------------------------------------------------------

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
# The site's scripts take the token from the page's <meta>, never from the cookie.
CSRF_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
if PRODUCTION:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        # wasm-unsafe-eval: libsodium runs as WebAssembly in the page.
        "script-src": [SELF, NONCE, WASM_UNSAFE_EVAL],
        "style-src": [SELF],
        "img-src": [SELF, "data:", "blob:"],
        "media-src": [SELF, "blob:"],
        "connect-src": [SELF],
        "worker-src": [SELF, "blob:"],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

# --- Logging: metadata only, never request bodies (docs/privacy.md) --------------------------

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # Django's request logger prints request details on errors; ours does not.
        "django.request": {"level": "ERROR"},
    },
}
