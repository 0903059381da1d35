"""Sales figures computed with ORM aggregation.

Only portable database functions are used (Sum, Count, TruncMonth on a
DateField), so the same queries run on SQLite and PostgreSQL. Orders count
as sales when their status is in Order.SALES_STATUSES.
"""

import datetime
from decimal import Decimal

from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncMonth

from .models import Customer, Order, OrderLine, Product, line_total_expression

ZERO = Decimal("0")


def month_start(day):
    return day.replace(day=1)


def add_months(day, months):
    """First day of the month ``months`` after the month of ``day``."""
    index = day.year * 12 + (day.month - 1) + months
    return datetime.date(index // 12, index % 12 + 1, 1)


def month_range(end, months):
    """(first day of the first month, first day after the last month)."""
    last = month_start(end)
    return add_months(last, -(months - 1)), add_months(last, 1)


def _sales_lines(start, end):
    return OrderLine.objects.filter(
        order__status__in=Order.SALES_STATUSES,
        order__date__gte=start,
        order__date__lt=end,
    )


def _order_filter(prefix, start, end):
    return Q(
        **{
            f"{prefix}status__in": Order.SALES_STATUSES,
            f"{prefix}date__gte": start,
            f"{prefix}date__lt": end,
        }
    )


def monthly_totals(start, end):
    """One row per calendar month in [start, end): month, revenue, orders.

    Months without sales are included with zeros, so the result always has
    one row per month.
    """
    rows = (
        _sales_lines(start, end)
        .annotate(month=TruncMonth("order__date"))
        .values("month")
        .annotate(
            revenue=Sum(line_total_expression()),
            orders=Count("order", distinct=True),
        )
        .order_by("month")
    )
    found = {}
    for row in rows:
        month = row["month"]
        if isinstance(month, datetime.datetime):
            month = month.date()
        found[month] = (row["revenue"] or ZERO, row["orders"])
    result = []
    month = month_start(start)
    while month < end:
        revenue, orders = found.get(month, (ZERO, 0))
        result.append({"month": month, "revenue": revenue, "orders": orders})
        month = add_months(month, 1)
    return result


def top_customers(start, end, limit=10):
    """Customers ordered by revenue in [start, end), highest first."""
    in_period = _order_filter("orders__", start, end)
    return list(
        Customer.objects.annotate(
            revenue=Sum(line_total_expression("orders__lines__"), filter=in_period),
            order_count=Count("orders", filter=in_period, distinct=True),
        )
        .filter(revenue__gt=0)
        .order_by("-revenue", "pk")[:limit]
    )


def top_products(start, end, limit=10):
    """Products ordered by revenue in [start, end), highest first."""
    in_period = _order_filter("order_lines__order__", start, end)
    return list(
        Product.objects.annotate(
            revenue=Sum(line_total_expression("order_lines__"), filter=in_period),
            quantity=Sum("order_lines__quantity", filter=in_period),
        )
        .filter(revenue__gt=0)
        .order_by("-revenue", "pk")[:limit]
    )


def summary(start, end):
    """Total revenue, number of orders and average order value."""
    totals = _sales_lines(start, end).aggregate(
        revenue=Sum(line_total_expression()),
        orders=Count("order", distinct=True),
    )
    revenue = totals["revenue"] or ZERO
    orders = totals["orders"] or 0
    average = (revenue / orders).quantize(Decimal("0.01")) if orders else ZERO
    return {"revenue": revenue, "orders": orders, "average": average}
