"""WSGI entry point: ``gunicorn librarysite.wsgi:application``."""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "librarysite.settings")

application = get_wsgi_application()
