import os
import tempfile
from pathlib import Path
from unittest import mock

from django.conf import settings
from django.db import OperationalError
from django.test import SimpleTestCase, TestCase, override_settings

from bizsite import views


class HealthzTests(TestCase):
    def test_ok_when_database_answers(self):
        response = self.client.get("/healthz/")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.content, b"ok\n")
        self.assertTrue(response["Content-Type"].startswith("text/plain"))
        self.assertIn("no-cache", response["Cache-Control"])

    def test_503_when_database_fails(self):
        broken = mock.Mock()
        broken.cursor.side_effect = OperationalError("connection refused")
        with mock.patch.object(views, "connection", broken), self.assertLogs("bizsite.views", "WARNING"):
            response = self.client.get("/healthz/")
        self.assertEqual(response.status_code, 503)
        self.assertEqual(response.content, b"database unavailable\n")

    def test_503_when_query_fails(self):
        cursor = mock.MagicMock()
        cursor.__enter__.return_value.execute.side_effect = OperationalError("server closed the connection")
        broken = mock.Mock()
        broken.cursor.return_value = cursor
        with mock.patch.object(views, "connection", broken), self.assertLogs("bizsite.views", "WARNING"):
            response = self.client.get("/healthz/")
        self.assertEqual(response.status_code, 503)

    def test_no_session_or_cookies(self):
        self.client.cookies.load({settings.SESSION_COOKIE_NAME: "bogus"})
        with mock.patch("django.contrib.sessions.backends.db.SessionStore.load") as load:
            response = self.client.get("/healthz/")
        load.assert_not_called()
        self.assertEqual(response.status_code, 200)
        self.assertFalse(response.cookies)
        self.assertNotIn("Cookie", response.get("Vary", ""))

    def test_any_host_header(self):
        response = self.client.get("/healthz/", HTTP_HOST="10.0.0.5:8000")
        self.assertEqual(response.status_code, 200)
        # Ordinary pages still validate the host.
        with self.assertLogs("django.security.DisallowedHost", "ERROR"):
            self.assertEqual(self.client.get("/", HTTP_HOST="10.0.0.5:8000").status_code, 400)

    def test_post_not_allowed(self):
        with self.assertLogs("django.request", "WARNING"):
            self.assertEqual(self.client.post("/healthz/").status_code, 405)

    @override_settings(SECURE_SSL_REDIRECT=True)
    def test_not_redirected_to_https(self):
        self.assertEqual(self.client.get("/healthz/").status_code, 200)
        self.assertEqual(self.client.get("/version/").status_code, 200)
        self.assertEqual(self.client.get("/").status_code, 301)

    def test_redirect_exempt_patterns(self):
        import re

        self.assertTrue(any(re.search(p, "healthz/") for p in settings.SECURE_REDIRECT_EXEMPT))
        self.assertFalse(any(re.search(p, "admin/") for p in settings.SECURE_REDIRECT_EXEMPT))

    @override_settings(SECURE_SSL_REDIRECT=True, MIDDLEWARE=[m for m in settings.MIDDLEWARE if not m.startswith("bizsite.")])
    def test_routed_view_exempt_from_https_redirect(self):
        # Without the short-cut middleware the URL-routed view answers, and
        # SECURE_REDIRECT_EXEMPT keeps it on plain HTTP.
        self.assertEqual(self.client.get("/healthz/").status_code, 200)
        self.assertEqual(self.client.get("/").status_code, 301)


class VersionTests(SimpleTestCase):
    def setUp(self):
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        self.revision_file = Path(directory.name) / "REVISION"

    def get(self):
        response = self.client.get("/version/")
        self.assertEqual(response.status_code, 200)
        self.assertTrue(response["Content-Type"].startswith("text/plain"))
        self.assertFalse(response.cookies)
        return response.content.decode()

    def test_from_setting(self):
        self.revision_file.write_text("from-file\n")
        with override_settings(APP_REVISION="3f2c1ab", REVISION_FILE=self.revision_file):
            self.assertEqual(self.get(), "3f2c1ab\n")

    def test_from_file_first_line(self):
        self.revision_file.write_text("9d8e7f6a5b4c3d2e1f00\ndeployed 2024-05-01\n")
        with override_settings(APP_REVISION="", REVISION_FILE=self.revision_file):
            self.assertEqual(self.get(), "9d8e7f6a5b4c3d2e1f00\n")

    def test_unknown(self):
        with override_settings(APP_REVISION="", REVISION_FILE=self.revision_file):
            self.assertEqual(self.get(), "unknown\n")
        self.revision_file.write_text("\n")
        with override_settings(APP_REVISION="", REVISION_FILE=self.revision_file):
            self.assertEqual(self.get(), "unknown\n")

    def test_revision_file_lives_in_project_root(self):
        self.assertEqual(settings.REVISION_FILE, settings.BASE_DIR / "REVISION")
        self.assertTrue((settings.BASE_DIR / "manage.py").exists())

    def test_env_reaches_view_through_settings(self):
        from .test_settings import load_settings

        loaded = load_settings(SECRET_KEY="k", APP_REVISION="abc123")
        with override_settings(APP_REVISION=loaded["APP_REVISION"], REVISION_FILE=self.revision_file):
            self.assertEqual(self.get(), "abc123\n")
