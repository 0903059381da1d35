import shutil
import tempfile
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import TestCase, override_settings

from sales.models import Customer, Order, OrderLine, Product
from sales.validators import is_valid_vat_number


class VatNumberTests(TestCase):
    def test_valid_numbers(self):
        for number in ["22099131", "04595257", "10000073"]:
            with self.subTest(number=number):
                self.assertTrue(is_valid_vat_number(number))

    def test_invalid_numbers(self):
        for number in ["22099132", "2209913", "220991311", "abcdefgh", "", None, "10000075"]:
            with self.subTest(number=number):
                self.assertFalse(is_valid_vat_number(number))

    def test_customer_validation(self):
        customer = Customer(name="王小明", vat_number="12345678")
        with self.assertRaises(ValidationError) as caught:
            customer.full_clean()
        self.assertIn("vat_number", caught.exception.message_dict)
        customer.vat_number = "22099131"
        customer.full_clean()
        customer.vat_number = ""
        customer.full_clean()


class CustomerTests(TestCase):
    def test_str(self):
        self.assertEqual(str(Customer(name="王小明", company="大同貿易")), "大同貿易 王小明")
        self.assertEqual(str(Customer(name="王小明")), "王小明")

    def test_created_defaults_to_now(self):
        customer = Customer.objects.create(name="林美玲")
        self.assertIsNotNone(customer.created)


class ContractUploadTests(TestCase):
    def setUp(self):
        self.media = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.media)

    def test_contract_is_stored_under_media_root(self):
        with override_settings(MEDIA_ROOT=self.media):
            customer = Customer.objects.create(
                name="陳志明",
                contract=SimpleUploadedFile("合約.pdf", b"%PDF-1.4 test", content_type="application/pdf"),
            )
            self.assertTrue(customer.contract.name.startswith("contracts/"))
            self.assertTrue(customer.contract.url.startswith("/media/contracts/"))
            with customer.contract.open("rb") as handle:
                self.assertEqual(handle.read(), b"%PDF-1.4 test")


class OrderTests(TestCase):
    def setUp(self):
        self.customer = Customer.objects.create(name="王小明")
        self.paper = Product.objects.create(sku="P1", name="A4 影印紙", unit_price=Decimal("135.00"))
        self.pen = Product.objects.create(sku="P2", name="中性筆", unit_price=Decimal("18.50"))

    def test_line_copies_product_price(self):
        order = Order.objects.create(customer=self.customer)
        line = OrderLine.objects.create(order=order, product=self.paper, quantity=3)
        self.assertEqual(line.unit_price, Decimal("135.00"))
        self.paper.unit_price = Decimal("150.00")
        self.paper.save()
        line.refresh_from_db()
        self.assertEqual(line.unit_price, Decimal("135.00"))

    def test_explicit_price_is_kept(self):
        order = Order.objects.create(customer=self.customer)
        line = OrderLine.objects.create(order=order, product=self.paper, quantity=1, unit_price=Decimal("120"))
        self.assertEqual(line.unit_price, Decimal("120"))

    def test_total(self):
        order = Order.objects.create(customer=self.customer)
        self.assertEqual(order.get_total(), Decimal("0"))
        OrderLine.objects.create(order=order, product=self.paper, quantity=2)
        OrderLine.objects.create(order=order, product=self.pen, quantity=4)
        self.assertEqual(order.get_total(), Decimal("344.00"))
        self.assertEqual(order.lines.first().total, Decimal("270.00"))

    def test_defaults(self):
        order = Order.objects.create(customer=self.customer)
        self.assertEqual(order.status, Order.Status.DRAFT)
        self.assertIsNotNone(order.date)
        self.assertNotIn(Order.Status.DRAFT, Order.SALES_STATUSES)
        self.assertNotIn(Order.Status.CANCELLED, Order.SALES_STATUSES)
