import datetime
from decimal import Decimal

from django.test import TestCase

from sales import analysis

from .factories import PERIOD_END, PERIOD_START, make_dataset


class MonthHelpersTests(TestCase):
    def test_add_months_crosses_years(self):
        self.assertEqual(analysis.add_months(datetime.date(2024, 11, 20), 2), datetime.date(2025, 1, 1))
        self.assertEqual(analysis.add_months(datetime.date(2024, 1, 31), -1), datetime.date(2023, 12, 1))
        self.assertEqual(analysis.add_months(datetime.date(2024, 3, 1), -14), datetime.date(2023, 1, 1))

    def test_month_range_covers_whole_months_ending_with_current(self):
        self.assertEqual(
            analysis.month_range(datetime.date(2024, 3, 15), 12),
            (datetime.date(2023, 4, 1), datetime.date(2024, 4, 1)),
        )
        self.assertEqual(
            analysis.month_range(datetime.date(2024, 3, 1), 1),
            (datetime.date(2024, 3, 1), datetime.date(2024, 4, 1)),
        )


class AnalysisTests(TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.data = make_dataset()

    def test_monthly_totals(self):
        rows = analysis.monthly_totals(PERIOD_START, PERIOD_END)
        self.assertEqual(
            [(row["month"], row["revenue"], row["orders"]) for row in rows],
            [
                (datetime.date(2024, 1, 1), Decimal("750"), 2),
                (datetime.date(2024, 2, 1), Decimal("800"), 1),
                (datetime.date(2024, 3, 1), Decimal("250"), 1),
            ],
        )

    def test_monthly_totals_include_empty_months(self):
        rows = analysis.monthly_totals(PERIOD_START, datetime.date(2024, 6, 1))
        self.assertEqual(len(rows), 5)
        self.assertEqual((rows[3]["month"], rows[3]["revenue"], rows[3]["orders"]), (datetime.date(2024, 4, 1), Decimal("30"), 1))
        self.assertEqual((rows[4]["month"], rows[4]["revenue"], rows[4]["orders"]), (datetime.date(2024, 5, 1), Decimal("0"), 0))

    def test_top_customers(self):
        rows = analysis.top_customers(PERIOD_START, PERIOD_END)
        self.assertEqual(
            [(c.pk, c.revenue, c.order_count) for c in rows],
            [(self.data["a"].pk, Decimal("1250"), 2), (self.data["b"].pk, Decimal("550"), 2)],
        )

    def test_top_customers_limit(self):
        rows = analysis.top_customers(PERIOD_START, PERIOD_END, limit=1)
        self.assertEqual([c.pk for c in rows], [self.data["a"].pk])

    def test_top_products(self):
        rows = analysis.top_products(PERIOD_START, PERIOD_END)
        self.assertEqual(
            [(p.sku, p.revenue, p.quantity) for p in rows],
            [("P2", Decimal("1050"), 5), ("P3", Decimal("450"), 15), ("P1", Decimal("300"), 3)],
        )

    def test_summary(self):
        self.assertEqual(
            analysis.summary(PERIOD_START, PERIOD_END),
            {"revenue": Decimal("1800"), "orders": 4, "average": Decimal("450.00")},
        )

    def test_empty_period(self):
        start, end = datetime.date(2020, 1, 1), datetime.date(2020, 3, 1)
        self.assertEqual(analysis.summary(start, end), {"revenue": 0, "orders": 0, "average": 0})
        self.assertEqual(analysis.top_customers(start, end), [])
        self.assertEqual(analysis.top_products(start, end), [])
        self.assertEqual([row["revenue"] for row in analysis.monthly_totals(start, end)], [0, 0])
