from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.shortcuts import render
from django.utils import timezone

from . import analysis
from .models import Customer, Order, Product

DEFAULT_MONTHS = 12
MAX_MONTHS = 60


def home(request):
    start, end = analysis.month_range(timezone.localdate(), DEFAULT_MONTHS)
    context = {
        "customer_count": Customer.objects.count(),
        "product_count": Product.objects.count(),
        "order_count": Order.objects.count(),
        "open_order_count": Order.objects.filter(
            status__in=[Order.Status.CONFIRMED, Order.Status.SHIPPED]
        ).count(),
        "period_start": start,
        "period_end": analysis.add_months(end, -1),
        "summary": analysis.summary(start, end),
    }
    return render(request, "sales/home.html", context)


def _months_param(request):
    try:
        months = int(request.GET.get("months", DEFAULT_MONTHS))
    except ValueError:
        return DEFAULT_MONTHS
    return min(max(months, 1), MAX_MONTHS)


def sales_analysis(request):
    months = _months_param(request)
    start, end = analysis.month_range(timezone.localdate(), months)
    monthly = analysis.monthly_totals(start, end)
    peak = max((row["revenue"] for row in monthly), default=0)
    for row in monthly:
        row["percent"] = int(row["revenue"] * 100 / peak) if peak else 0
    context = {
        "months": months,
        "month_choices": [3, 6, 12, 24],
        "period_start": start,
        "period_end": analysis.add_months(end, -1),
        "summary": analysis.summary(start, end),
        "monthly": monthly,
        "top_customers": analysis.top_customers(start, end),
        "top_products": analysis.top_products(start, end),
    }
    return render(request, "sales/analysis.html", context)


def customer_list(request):
    query = request.GET.get("q", "").strip()
    city = request.GET.get("city", "").strip()
    customers = Customer.objects.annotate(order_count=Count("orders")).order_by("company", "name", "pk")
    if query:
        customers = customers.filter(
            Q(name__icontains=query)
            | Q(company__icontains=query)
            | Q(email__icontains=query)
            | Q(phone__icontains=query)
            | Q(vat_number__icontains=query)
        )
    if city:
        customers = customers.filter(city=city)
    page = Paginator(customers, 50).get_page(request.GET.get("page"))
    cities = (
        Customer.objects.exclude(city="").order_by("city").values_list("city", flat=True).distinct()
    )
    context = {
        "page": page,
        "query": query,
        "city": city,
        "cities": cities,
        "total": page.paginator.count,
    }
    return render(request, "sales/customer_list.html", context)
