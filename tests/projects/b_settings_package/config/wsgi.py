"""
WSGI config for Taskboard.

Used by Django's development server and by any production WSGI deployment
(``gunicorn config.wsgi:application``). Production settings are the default
here; ``manage.py`` defaults to the local settings instead.
"""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")

application = get_wsgi_application()
