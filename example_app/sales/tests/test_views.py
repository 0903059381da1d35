import re
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.contrib.staticfiles import finders
from django.test import TestCase
from django.urls import reverse
from django.utils import timezone

from sales.models import Customer, Order, OrderLine, Product

from .factories import make_dataset


class HomeViewTests(TestCase):
    @classmethod
    def setUpTestData(cls):
        customer = Customer.objects.create(name="王小明", company="大同貿易股份有限公司", city="臺北市")
        product = Product.objects.create(sku="P1", name="碳粉匣", unit_price=Decimal("2380"))
        order = Order.objects.create(customer=customer, status=Order.Status.PAID)
        OrderLine.objects.create(order=order, product=product, quantity=1)
        Order.objects.create(customer=customer, status=Order.Status.SHIPPED)

    def test_home_shows_counts_in_traditional_chinese(self):
        response = self.client.get("/")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response["Content-Language"], "zh-hant")
        self.assertEqual(response.context["customer_count"], 1)
        self.assertEqual(response.context["product_count"], 1)
        self.assertEqual(response.context["order_count"], 2)
        self.assertEqual(response.context["open_order_count"], 1)
        self.assertContains(response, "總覽")
        self.assertContains(response, "業績分析")
        self.assertContains(response, "NT$ 2,380")
        self.assertContains(response, reverse("sales-analysis"))
        self.assertContains(response, reverse("admin:index"))
        self.assertContains(response, '<html lang="zh-hant">')

    def test_home_in_english(self):
        response = self.client.get("/", HTTP_ACCEPT_LANGUAGE="en")
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, "Overview")
        self.assertContains(response, "Sales analysis")
        self.assertNotContains(response, "業績分析")

    def test_stylesheet_is_linked_and_found(self):
        response = self.client.get("/")
        self.assertContains(response, 'href="/static/sales/site.css"')
        self.assertIsNotNone(finders.find("sales/site.css"))


class AnalysisViewTests(TestCase):
    @classmethod
    def setUpTestData(cls):
        # The hand-made dataset, moved so that its March 2024 is the
        # current month and 2024-04 onwards lies in the future.
        today = timezone.localdate()
        shift = (today.year - 2024) * 12 + today.month - 3
        cls.data = make_dataset(shift=shift)
        cls.current_month = today.replace(day=1)

    def test_analysis_page_numbers(self):
        response = self.client.get(reverse("sales-analysis"))
        self.assertEqual(response.status_code, 200)
        summary = response.context["summary"]
        # The order "after the period" now lies in the future, so only the
        # one before it (December 2023, 50×100) is added when looking back 12 months.
        self.assertEqual(summary["revenue"], Decimal("6800"))
        self.assertEqual(summary["orders"], 5)
        monthly = response.context["monthly"]
        self.assertEqual(len(monthly), 12)
        self.assertEqual([row["revenue"] for row in monthly[-4:]], [5000, 750, 800, 250])
        self.assertEqual(monthly[-1]["month"], self.current_month)
        self.assertEqual(monthly[-3]["percent"], 15)
        customers = [(c.pk, c.revenue) for c in response.context["top_customers"]]
        self.assertEqual(customers[0], (self.data["c"].pk, Decimal("5000")))
        self.assertContains(response, "業績分析")
        self.assertContains(response, "6,800")
        self.assertContains(response, "大同貿易股份有限公司")
        self.assertContains(response, "碳粉匣")

    def test_period_parameter(self):
        response = self.client.get(reverse("sales-analysis"), {"months": "3"})
        self.assertEqual(response.status_code, 200)
        self.assertEqual(len(response.context["monthly"]), 3)
        self.assertEqual(response.context["summary"]["revenue"], Decimal("1800"))
        for bad in ["abc", "-5", "0"]:
            response = self.client.get(reverse("sales-analysis"), {"months": bad})
            self.assertEqual(response.status_code, 200)
            self.assertGreaterEqual(len(response.context["monthly"]), 1)
        response = self.client.get(reverse("sales-analysis"), {"months": "1000"})
        self.assertEqual(len(response.context["monthly"]), 60)

    def test_empty_database(self):
        Order.objects.all().delete()
        response = self.client.get(reverse("sales-analysis"))
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, "此期間沒有銷售紀錄")


class CustomerListTests(TestCase):
    @classmethod
    def setUpTestData(cls):
        make_dataset()

    def test_lists_customers(self):
        response = self.client.get(reverse("customer-list"))
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.context["total"], 3)
        self.assertContains(response, "永豐電子有限公司")
        self.assertContains(response, "客戶資料管理")

    def test_search_and_city_filter(self):
        response = self.client.get(reverse("customer-list"), {"q": "永豐"})
        self.assertEqual([c.name for c in response.context["page"]], ["林美玲"])
        response = self.client.get(reverse("customer-list"), {"city": "臺中市"})
        self.assertEqual([c.name for c in response.context["page"]], ["陳志明"])
        response = self.client.get(reverse("customer-list"), {"q": "沒有這個人"})
        self.assertContains(response, "找不到客戶")


class AdminTests(TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.data = make_dataset()
        cls.user = get_user_model().objects.create_superuser("admin", "admin@example.com", "pw-for-tests-only")

    def test_admin_pages(self):
        self.client.force_login(self.user)
        order = Order.objects.first()
        urls = [reverse("admin:index")]
        for model in ["customer", "product", "order", "orderline"]:
            urls.append(reverse(f"admin:sales_{model}_changelist"))
            urls.append(reverse(f"admin:sales_{model}_add"))
        urls.append(reverse("admin:sales_order_change", args=[order.pk]))
        urls.append(reverse("admin:sales_customer_change", args=[self.data["a"].pk]))
        for url in urls:
            with self.subTest(url=url):
                self.assertEqual(self.client.get(url).status_code, 200)

    def test_order_changelist_shows_totals(self):
        self.client.force_login(self.user)
        response = self.client.get(reverse("admin:sales_order_changelist"))
        self.assertContains(response, "企業管理系統")
        totals = sorted(Decimal(o.line_total or 0) for o in response.context["cl"].result_list)
        self.assertEqual(totals, sorted(Decimal(x) for x in ["450", "300", "800", "10000", "2500", "250", "5000", "30"]))

    def test_admin_requires_login(self):
        response = self.client.get(reverse("admin:sales_customer_changelist"))
        self.assertEqual(response.status_code, 302)
        self.assertTrue(re.search(r"/admin/login/", response["Location"]))
