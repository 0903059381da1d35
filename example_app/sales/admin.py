from django.contrib import admin
from django.db.models import Sum
from django.utils.translation import gettext_lazy as _

from .models import Customer, Order, OrderLine, Product, line_total_expression


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    list_display = ["company", "name", "vat_number", "city", "phone", "email", "created"]
    list_display_links = ["company", "name"]
    list_filter = ["city"]
    search_fields = ["name", "company", "email", "phone", "vat_number"]
    date_hierarchy = "created"


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ["sku", "name", "unit_price"]
    search_fields = ["sku", "name"]


class OrderLineInline(admin.TabularInline):
    model = OrderLine
    extra = 1
    autocomplete_fields = ["product"]
    fields = ["product", "quantity", "unit_price"]


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = ["__str__", "customer", "date", "status", "total"]
    list_filter = ["status", "date"]
    list_select_related = ["customer"]
    search_fields = ["customer__name", "customer__company", "id"]
    autocomplete_fields = ["customer"]
    date_hierarchy = "date"
    inlines = [OrderLineInline]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            line_total=Sum(line_total_expression("lines__"))
        )

    @admin.display(description=_("total"), ordering="line_total")
    def total(self, obj):
        return obj.line_total or 0


@admin.register(OrderLine)
class OrderLineAdmin(admin.ModelAdmin):
    list_display = ["order", "product", "quantity", "unit_price"]
    list_select_related = ["order", "product"]
    autocomplete_fields = ["order", "product"]
    search_fields = ["order__id", "product__sku", "product__name"]
