from decimal import Decimal

from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import DecimalField, ExpressionWrapper, F, Sum
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .validators import validate_vat_number

MONEY = {"max_digits": 12, "decimal_places": 2}


def line_total_expression(prefix=""):
    """quantity × unit price of an order line, as a DB expression.

    ``prefix`` is the lookup path from the queried model to OrderLine,
    e.g. "lines__" from Order or "orders__lines__" from Customer.
    """
    return ExpressionWrapper(
        F(f"{prefix}quantity") * F(f"{prefix}unit_price"),
        output_field=DecimalField(**MONEY),
    )


class Customer(models.Model):
    name = models.CharField(_("contact name"), max_length=100)
    company = models.CharField(_("company"), max_length=150, blank=True)
    vat_number = models.CharField(
        _("VAT number"),
        max_length=8,
        blank=True,
        validators=[validate_vat_number],
        help_text=_("Taiwanese unified business number (8 digits)."),
    )
    email = models.EmailField(_("email"), blank=True)
    phone = models.CharField(_("phone"), max_length=30, blank=True)
    city = models.CharField(_("city"), max_length=30, blank=True, db_index=True)
    contract = models.FileField(_("contract"), upload_to="contracts/", blank=True)
    created = models.DateTimeField(_("created"), default=timezone.now, db_index=True)

    class Meta:
        ordering = ["company", "name"]
        verbose_name = _("customer")
        verbose_name_plural = _("customers")

    def __str__(self):
        return f"{self.company} {self.name}".strip() if self.company else self.name


class Product(models.Model):
    sku = models.CharField(_("SKU"), max_length=32, unique=True)
    name = models.CharField(_("name"), max_length=150)
    unit_price = models.DecimalField(
        _("unit price"), **MONEY, validators=[MinValueValidator(Decimal("0"))]
    )

    class Meta:
        ordering = ["sku"]
        verbose_name = _("product")
        verbose_name_plural = _("products")

    def __str__(self):
        return f"{self.sku} {self.name}"


class Order(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", _("Draft")
        CONFIRMED = "confirmed", _("Confirmed")
        SHIPPED = "shipped", _("Shipped")
        PAID = "paid", _("Paid")
        CANCELLED = "cancelled", _("Cancelled")

    # Orders that count as sales in the analysis.
    SALES_STATUSES = (Status.CONFIRMED, Status.SHIPPED, Status.PAID)

    customer = models.ForeignKey(
        Customer, on_delete=models.PROTECT, related_name="orders", verbose_name=_("customer")
    )
    date = models.DateField(_("order date"), default=timezone.localdate)
    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.DRAFT
    )

    class Meta:
        ordering = ["-date", "-id"]
        verbose_name = _("order")
        verbose_name_plural = _("orders")
        indexes = [models.Index(fields=["status", "date"], name="sales_order_status_date")]

    def __str__(self):
        return _("Order #%(id)s") % {"id": self.pk}

    def get_total(self):
        total = self.lines.aggregate(total=Sum(line_total_expression()))["total"]
        return total or Decimal("0")


class OrderLine(models.Model):
    order = models.ForeignKey(
        Order, on_delete=models.CASCADE, related_name="lines", verbose_name=_("order")
    )
    product = models.ForeignKey(
        Product, on_delete=models.PROTECT, related_name="order_lines", verbose_name=_("product")
    )
    quantity = models.PositiveIntegerField(_("quantity"), default=1, validators=[MinValueValidator(1)])
    unit_price = models.DecimalField(
        _("unit price"),
        **MONEY,
        blank=True,
        validators=[MinValueValidator(Decimal("0"))],
        help_text=_("Leave empty to use the product's current price."),
    )

    class Meta:
        ordering = ["id"]
        verbose_name = _("order line")
        verbose_name_plural = _("order lines")

    def __str__(self):
        return f"{self.product} × {self.quantity}"

    @property
    def total(self):
        if self.unit_price is None or self.quantity is None:
            return None
        return self.quantity * self.unit_price

    def save(self, *args, **kwargs):
        # The price is copied from the product unless given explicitly, so
        # later price changes do not alter past orders.
        if self.unit_price is None and self.product_id is not None:
            self.unit_price = self.product.unit_price
        super().save(*args, **kwargs)
