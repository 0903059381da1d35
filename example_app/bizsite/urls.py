from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.urls import include, path
from django.utils.translation import gettext_lazy as _

from . import views

admin.site.site_header = _("Business management system")
admin.site.site_title = _("Business management system")
admin.site.index_title = _("Administration")

urlpatterns = [
    path("healthz/", views.healthz, name="healthz"),
    path("version/", views.version, name="version"),
    path("i18n/", include("django.conf.urls.i18n")),
    path("admin/", admin.site.urls),
    path("", include("sales.urls")),
]

# In production nginx serves /media/; this only applies with DEBUG on.
urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)
