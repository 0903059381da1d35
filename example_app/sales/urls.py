from django.urls import path

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("analysis/", views.sales_analysis, name="sales-analysis"),
    path("customers/", views.customer_list, name="customer-list"),
]
