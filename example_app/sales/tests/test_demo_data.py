import datetime
from io import StringIO

from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import TestCase
from django.utils import timezone

from sales.models import Customer, Order, OrderLine, Product
from sales.validators import is_valid_vat_number


def run(*args, **options):
    out = StringIO()
    call_command("load_demo_data", *args, stdout=out, **options)
    return out.getvalue()


class LoadDemoDataTests(TestCase):
    def test_loads_requested_amounts(self):
        output = run(customers=25, orders=60, seed=7)
        self.assertIn("Loaded 25 customers", output)
        self.assertEqual(Customer.objects.count(), 25)
        self.assertEqual(Order.objects.count(), 60)
        self.assertGreater(Product.objects.count(), 10)
        self.assertGreaterEqual(OrderLine.objects.count(), 60)
        self.assertFalse(Order.objects.filter(lines__isnull=True).exists())

    def test_data_is_plausible(self):
        run(customers=40, orders=120, seed=3)
        today = timezone.localdate()
        dates = Order.objects.values_list("date", flat=True)
        self.assertTrue(all(today - datetime.timedelta(days=365) < d <= today for d in dates))
        self.assertGreater(len({d.month for d in dates}), 6)
        for customer in Customer.objects.all():
            if customer.vat_number:
                self.assertTrue(is_valid_vat_number(customer.vat_number), customer.vat_number)
            self.assertTrue(customer.city.endswith(("市", "縣")))
            self.assertIn("@", customer.email)
            customer.full_clean()
        self.assertTrue(Order.objects.filter(status__in=Order.SALES_STATUSES).exists())

    def test_skips_when_data_exists(self):
        run(customers=5, orders=10, seed=1)
        output = run(customers=50, orders=50, seed=2)
        self.assertIn("already present", output)
        self.assertEqual(Customer.objects.count(), 5)
        self.assertEqual(Order.objects.count(), 10)

    def test_reset_replaces_data(self):
        run(customers=5, orders=10, seed=1)
        run("--reset", "--customers", "8", "--orders", "12", "--seed", "1")
        self.assertEqual(Customer.objects.count(), 8)
        self.assertEqual(Order.objects.count(), 12)

    def test_same_seed_gives_same_data(self):
        run(customers=10, orders=20, seed=5)
        first = list(Customer.objects.order_by("pk").values_list("name", "company", "city"))
        run(reset=True, customers=10, orders=20, seed=5)
        second = list(Customer.objects.order_by("pk").values_list("name", "company", "city"))
        self.assertEqual(first, second)

    def test_rejects_bad_counts(self):
        with self.assertRaises(CommandError):
            run(customers=0)
