from django.contrib import admin
from django.urls import path

from books.views import CatalogueView

urlpatterns = [
    path("", CatalogueView.as_view(), name="catalogue"),
    path("admin/", admin.site.urls),
]
