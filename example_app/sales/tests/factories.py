"""A small hand-made dataset with sums worked out by hand.

Period analysed: 2024-01-01 up to (not including) 2024-04-01.

order  customer  date        status     lines                         counted
o1     A         2024-01-15  paid       P1 2×100=200, P2 1×250=250     450
o2     B         2024-01-31  shipped    P3 10×30=300                   300
o3     A         2024-02-01  confirmed  P2 4×200=800 (discounted)      800
o4     C         2024-02-29  cancelled  P1 100×100                     no
o5     C         2024-03-10  draft      P2 10×250                      no
o6     B         2024-03-31  paid       P1 1×100=100, P3 5×30=150      250
o7     C         2023-12-31  paid       P1 50×100                      before period
o8     A         2024-04-01  paid       P3 1×30=30                     after period

Monthly: 2024-01 750 (2 orders), 2024-02 800 (1), 2024-03 250 (1).
Customers: A 1250 (2 orders), B 550 (2 orders); C has no counted sales.
Products: P2 1050 (qty 5), P3 450 (qty 15), P1 300 (qty 3).
Total 1800 in 4 orders, average 450.
"""

import calendar
import datetime
from decimal import Decimal

from sales.analysis import add_months
from sales.models import Customer, Order, OrderLine, Product

PERIOD_START = datetime.date(2024, 1, 1)
PERIOD_END = datetime.date(2024, 4, 1)


def order(customer, date, status, *lines):
    created = Order.objects.create(customer=customer, date=date, status=status)
    for product, quantity, price in lines:
        OrderLine.objects.create(
            order=created, product=product, quantity=quantity, unit_price=Decimal(price)
        )
    return created


def make_dataset(shift=None):
    """Create the dataset; ``shift`` moves every date by whole months so
    the same numbers can be placed relative to today."""

    def day(year, month, dom):
        if shift is None:
            return datetime.date(year, month, dom)
        first = add_months(datetime.date(year, month, 1), shift)
        return min_day(first, dom)

    a = Customer.objects.create(name="王小明", company="大同貿易股份有限公司", city="臺北市")
    b = Customer.objects.create(name="林美玲", company="永豐電子有限公司", city="高雄市")
    c = Customer.objects.create(name="陳志明", company="", city="臺中市")
    p1 = Product.objects.create(sku="P1", name="A4 影印紙", unit_price=Decimal("100"))
    p2 = Product.objects.create(sku="P2", name="碳粉匣", unit_price=Decimal("250"))
    p3 = Product.objects.create(sku="P3", name="中性筆", unit_price=Decimal("30"))
    S = Order.Status
    order(a, day(2024, 1, 15), S.PAID, (p1, 2, "100"), (p2, 1, "250"))
    order(b, day(2024, 1, 31), S.SHIPPED, (p3, 10, "30"))
    order(a, day(2024, 2, 1), S.CONFIRMED, (p2, 4, "200"))
    order(c, day(2024, 2, 29), S.CANCELLED, (p1, 100, "100"))
    order(c, day(2024, 3, 10), S.DRAFT, (p2, 10, "250"))
    order(b, day(2024, 3, 31), S.PAID, (p1, 1, "100"), (p3, 5, "30"))
    order(c, day(2023, 12, 31), S.PAID, (p1, 50, "100"))
    order(a, day(2024, 4, 1), S.PAID, (p3, 1, "30"))
    return {"a": a, "b": b, "c": c, "p1": p1, "p2": p2, "p3": p3}


def min_day(first_of_month, dom):
    """``dom`` in the month of ``first_of_month``, clamped to its last day."""
    last = calendar.monthrange(first_of_month.year, first_of_month.month)[1]
    return first_of_month.replace(day=min(dom, last))
