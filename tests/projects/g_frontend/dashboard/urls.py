from django.contrib import admin
from django.urls import path

from widgets.views import board

urlpatterns = [
    path("", board, name="board"),
    path("admin/", admin.site.urls),
]
