from django.contrib import admin
from django.urls import path

from appointments import views

urlpatterns = [
    path("", views.today, name="today"),
    path("admin/", admin.site.urls),
]
