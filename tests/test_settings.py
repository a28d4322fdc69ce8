"""Run modes: production refuses to start half-configured, and passes check --deploy."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PRODUCTION = {
    "DJANGO_ENV": "production",
    "SECRET_KEY": "k" * 20 + "-production-secret-for-the-test-only-0123456789",
    "FRANKING_SECRET": "f" * 20 + "-franking-secret-for-the-test-only-0123456789",
    "ALLOWED_HOSTS": "parley.example",
    "DATABASE_URL": "postgres://parley@db.invalid:5432/parley",
    "REDIS_URL": "redis://redis.invalid:6379/0",
}


def manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in PRODUCTION and k != "DEBUG"}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_production_passes_check_deploy() -> None:
    result = manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_refuses_to_start_without_secret_key() -> None:
    env = {key: value for key, value in PRODUCTION.items() if key != "SECRET_KEY"}
    result = manage("check", **env)
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_production_refuses_a_shared_franking_secret() -> None:
    result = manage("check", **{**PRODUCTION, "FRANKING_SECRET": PRODUCTION["SECRET_KEY"]})
    assert result.returncode != 0
    assert "FRANKING_SECRET" in result.stderr


def test_production_never_runs_with_debug() -> None:
    code = "from django.conf import settings; print(settings.DEBUG)"
    result = manage("shell", "-v", "0", "-c", code, **PRODUCTION, DEBUG="1")
    assert result.stdout.strip() == "False", result.stderr


def test_embedded_default_needs_no_variables() -> None:
    code = (
        "from django.conf import settings as s;"
        "print(s.DATABASES['default']['ENGINE'], s.CHANNEL_LAYERS['default']['BACKEND'],"
        " s.CELERY_TASK_ALWAYS_EAGER, s.EMAIL_BACKEND, s.DEBUG)"
    )
    result = manage("shell", "-v", "0", "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "common.sqlite",
        "channels.layers.InMemoryChannelLayer",
        "True",
        "django.core.mail.backends.console.EmailBackend",
        "False",
    ]
