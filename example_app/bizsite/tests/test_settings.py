import os
import runpy
import subprocess
import sys
from pathlib import Path
from unittest import mock

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.test import SimpleTestCase

SETTINGS_FILE = Path(__file__).resolve().parent.parent / "settings.py"
PROJECT_DIR = SETTINGS_FILE.parent.parent


def load_settings(**env):
    """Execute settings.py afresh with exactly the given environment
    (plus an in-memory database unless one is given) and return its names."""
    env.setdefault("DATABASE_URL", "sqlite://:memory:")
    with mock.patch.dict(os.environ, env, clear=True):
        return runpy.run_path(str(SETTINGS_FILE))


class SecretKeyTests(SimpleTestCase):
    def test_missing_secret_key_with_debug_off_raises(self):
        with self.assertRaisesMessage(ImproperlyConfigured, "SECRET_KEY environment variable is not set"):
            load_settings()

    def test_blank_secret_key_raises(self):
        with self.assertRaises(ImproperlyConfigured):
            load_settings(SECRET_KEY="  ", DEBUG="no")

    def test_debug_allows_missing_key(self):
        loaded = load_settings(DEBUG="1")
        self.assertTrue(loaded["DEBUG"])
        self.assertTrue(loaded["SECRET_KEY"])

    def test_secret_key_from_env(self):
        self.assertEqual(load_settings(SECRET_KEY="s3cret")["SECRET_KEY"], "s3cret")

    def test_manage_py_reports_missing_key(self):
        env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG", "DJANGO_SETTINGS_MODULE")}
        env["DATABASE_URL"] = "sqlite://:memory:"
        result = subprocess.run(
            [sys.executable, "manage.py", "check"],
            cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=120,
        )
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("SECRET_KEY environment variable is not set", result.stderr)


class EnvironmentTests(SimpleTestCase):
    def test_defaults(self):
        loaded = load_settings(SECRET_KEY="k", DATABASE_URL="")
        self.assertFalse(loaded["DEBUG"])
        self.assertEqual(loaded["ALLOWED_HOSTS"], ["localhost", "127.0.0.1"])
        self.assertEqual(loaded["CSRF_TRUSTED_ORIGINS"], [])
        self.assertEqual(loaded["LANGUAGE_CODE"], "zh-hant")
        self.assertEqual([code for code, _ in loaded["LANGUAGES"]], ["zh-hant", "en"])
        self.assertEqual(loaded["TIME_ZONE"], "Asia/Taipei")
        self.assertTrue(loaded["USE_TZ"])
        base = loaded["BASE_DIR"]
        self.assertEqual(loaded["DATABASES"]["default"]["ENGINE"], "django.db.backends.sqlite3")
        self.assertEqual(loaded["DATABASES"]["default"]["NAME"], base / "data" / "db.sqlite3")
        self.assertEqual(loaded["STATIC_ROOT"], base / "staticfiles")
        self.assertEqual(loaded["MEDIA_ROOT"], base / "media")
        self.assertEqual(loaded["STATIC_URL"], "/static/")
        self.assertEqual(loaded["MEDIA_URL"], "/media/")
        self.assertEqual(
            loaded["STORAGES"]["staticfiles"]["BACKEND"],
            "django.contrib.staticfiles.storage.ManifestStaticFilesStorage",
        )
        self.assertEqual(loaded["APP_REVISION"], "")

    def test_debug_values(self):
        for value in ["1", "true", "yes", "on", "TRUE", " On "]:
            with self.subTest(value=value):
                self.assertTrue(load_settings(DEBUG=value)["DEBUG"])
        for value in ["0", "false", "no", "off", ""]:
            with self.subTest(value=value):
                self.assertFalse(load_settings(DEBUG=value, SECRET_KEY="k")["DEBUG"])

    def test_lists(self):
        loaded = load_settings(
            SECRET_KEY="k",
            ALLOWED_HOSTS="erp.example.com, www.example.com,,",
            CSRF_TRUSTED_ORIGINS="https://erp.example.com,https://www.example.com",
        )
        self.assertEqual(loaded["ALLOWED_HOSTS"], ["erp.example.com", "www.example.com"])
        self.assertEqual(loaded["CSRF_TRUSTED_ORIGINS"], ["https://erp.example.com", "https://www.example.com"])

    def test_paths(self):
        loaded = load_settings(
            SECRET_KEY="k", DATABASE_URL="", DATA_DIR="/nonexistent/ro/data",
            STATIC_ROOT="/srv/site/static", MEDIA_ROOT="/srv/site/media",
        )
        self.assertEqual(str(loaded["DATABASES"]["default"]["NAME"]), "/nonexistent/ro/data/db.sqlite3")
        self.assertEqual(str(loaded["STATIC_ROOT"]), "/srv/site/static")
        self.assertEqual(str(loaded["MEDIA_ROOT"]), "/srv/site/media")

    def test_postgres_url(self):
        loaded = load_settings(SECRET_KEY="k", DATABASE_URL="postgres://biz:pw@db.internal:5433/bizdb")
        db = loaded["DATABASES"]["default"]
        self.assertEqual(db["ENGINE"], "django.db.backends.postgresql")
        self.assertEqual((db["NAME"], db["USER"], db["PASSWORD"], db["HOST"], db["PORT"]), ("bizdb", "biz", "pw", "db.internal", 5433))
        self.assertEqual(db["CONN_MAX_AGE"], 60)
        self.assertTrue(db["CONN_HEALTH_CHECKS"])

    def test_psycopg_is_installed(self):
        import psycopg

        self.assertTrue(psycopg.__version__)

    def test_language_override(self):
        self.assertEqual(load_settings(SECRET_KEY="k", LANGUAGE_CODE="en")["LANGUAGE_CODE"], "en")

    def test_app_revision(self):
        self.assertEqual(load_settings(SECRET_KEY="k", APP_REVISION=" abc123 ")["APP_REVISION"], "abc123")

    def test_bad_integer(self):
        with self.assertRaises(ImproperlyConfigured):
            load_settings(SECRET_KEY="k", HTTPS="1", SECURE_HSTS_SECONDS="a year")


class SecurityTests(SimpleTestCase):
    def test_https_off(self):
        loaded = load_settings(SECRET_KEY="k")
        for name in ["SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_SSL_REDIRECT",
                     "SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_HSTS_PRELOAD"]:
            with self.subTest(name=name):
                self.assertFalse(loaded[name])
        self.assertEqual(loaded["SECURE_HSTS_SECONDS"], 0)

    def test_https_on(self):
        loaded = load_settings(SECRET_KEY="k", HTTPS="yes")
        for name in ["SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_SSL_REDIRECT",
                     "SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_HSTS_PRELOAD"]:
            with self.subTest(name=name):
                self.assertTrue(loaded[name])
        self.assertEqual(loaded["SECURE_HSTS_SECONDS"], 31536000)

    def test_always_on(self):
        loaded = load_settings(SECRET_KEY="k")
        self.assertEqual(loaded["SECURE_PROXY_SSL_HEADER"], ("HTTP_X_FORWARDED_PROTO", "https"))
        self.assertEqual(loaded["X_FRAME_OPTIONS"], "DENY")
        self.assertTrue(loaded["SECURE_CONTENT_TYPE_NOSNIFF"])
        self.assertTrue(loaded["SECURE_REFERRER_POLICY"])
        self.assertIn(r"^healthz/$", loaded["SECURE_REDIRECT_EXEMPT"])

    def test_logging_to_stderr(self):
        handlers = load_settings(SECRET_KEY="k")["LOGGING"]["handlers"]
        self.assertEqual({h["stream"] for h in handlers.values()}, {"ext://sys.stderr"})

    def _deploy_check_ids(self, **env):
        full_env = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "HTTPS", "DJANGO_SETTINGS_MODULE")}
        full_env.update(SECRET_KEY="k" * 10 + "-long-random-enough-key-for-the-deploy-checks-0123456789",
                        DATABASE_URL="sqlite://:memory:", **env)
        result = subprocess.run(
            [sys.executable, "manage.py", "check", "--deploy"],
            cwd=PROJECT_DIR, env=full_env, capture_output=True, text=True, timeout=120,
        )
        import re

        return result, sorted(set(re.findall(r"\((security\.\w+)\)", result.stdout + result.stderr)))

    def test_check_deploy_with_https(self):
        result, ids = self._deploy_check_ids(HTTPS="1")
        self.assertEqual(ids, [], result.stderr)
        self.assertEqual(result.returncode, 0)

    def test_check_deploy_without_https_only_https_warnings(self):
        result, ids = self._deploy_check_ids()
        self.assertEqual(ids, ["security.W004", "security.W008", "security.W012", "security.W016"], result.stderr)
