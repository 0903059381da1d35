from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.urls import include, path

from taskboard.tasks.views import home

urlpatterns = [
    path("", home, name="home"),
    path("admin/", admin.site.urls),
    # Serves uploads with the development server only (no-op when DEBUG is off).
    *static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT),
]

if settings.DEBUG and "debug_toolbar" in settings.INSTALLED_APPS:
    urlpatterns = [path("__debug__/", include("debug_toolbar.urls")), *urlpatterns]
