"""Load realistic demo data: Taiwanese customers, a product catalogue and
orders spread over the last twelve months."""

import datetime
import random
from decimal import Decimal

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from sales.models import Customer, Order, OrderLine, Product
from sales.validators import is_valid_vat_number

# (surname, romanisation) of common Taiwanese family names.
SURNAMES = [
    ("陳", "chen"), ("林", "lin"), ("黃", "huang"), ("張", "chang"), ("李", "lee"),
    ("王", "wang"), ("吳", "wu"), ("劉", "liu"), ("蔡", "tsai"), ("楊", "yang"),
    ("許", "hsu"), ("鄭", "cheng"), ("謝", "hsieh"), ("郭", "kuo"), ("洪", "hung"),
    ("曾", "tseng"), ("邱", "chiu"), ("廖", "liao"), ("賴", "lai"), ("周", "chou"),
    ("徐", "hsu"), ("蘇", "su"), ("葉", "yeh"), ("莊", "chuang"), ("呂", "lu"),
    ("江", "chiang"), ("何", "ho"), ("蕭", "hsiao"), ("羅", "lo"), ("高", "kao"),
]

# Given names with a Wade-Giles-style romanisation, as on Taiwanese passports.
GIVEN_NAMES = [
    ("志明", "chihming"), ("淑芬", "shufen"), ("雅婷", "yating"), ("家豪", "chiahao"),
    ("怡君", "yichun"), ("建宏", "chienhung"), ("美玲", "meiling"), ("俊傑", "chunchieh"),
    ("佳穎", "chiaying"), ("冠宇", "kuanyu"), ("宗翰", "tsunghan"), ("欣怡", "hsinyi"),
    ("承恩", "chengen"), ("詩涵", "shihhan"), ("柏翰", "pohan"), ("秀英", "hsiuying"),
    ("文雄", "wenhsiung"), ("麗華", "lihua"), ("宇軒", "yuhsuan"), ("心怡", "hsinyi"),
    ("國華", "kuohua"), ("靜宜", "chingyi"), ("信宏", "hsinhung"), ("惠如", "huiju"),
]

COMPANY_WORDS = [
    "大同", "永豐", "台光", "新光", "宏達", "聯華", "富邦", "長榮", "統一", "嘉新",
    "遠東", "華新", "全興", "友成", "順發", "金億", "大成", "日盛", "昇陽", "鼎泰",
    "正隆", "和泰", "佳和", "東元", "美好", "合勝", "興農", "天仁", "旭昌", "振宇",
]

COMPANY_TRADES = [
    ("科技", "tech"), ("貿易", "trading"), ("實業", "industrial"), ("電子", "electronics"),
    ("精密", "precision"), ("食品", "foods"), ("建設", "construction"), ("設計", "design"),
    ("物流", "logistics"), ("文具", "stationery"), ("生技", "biotech"), ("餐飲", "catering"),
]

COMPANY_FORMS = ["股份有限公司", "股份有限公司", "有限公司", "有限公司", "企業社", "工作室"]

# (city, landline area code)
CITIES = [
    ("臺北市", "02"), ("臺北市", "02"), ("新北市", "02"), ("新北市", "02"),
    ("桃園市", "03"), ("臺中市", "04"), ("臺中市", "04"), ("臺南市", "06"),
    ("高雄市", "07"), ("高雄市", "07"), ("基隆市", "02"), ("新竹市", "03"),
    ("新竹縣", "03"), ("苗栗縣", "037"), ("彰化縣", "04"), ("南投縣", "049"),
    ("雲林縣", "05"), ("嘉義市", "05"), ("屏東縣", "08"), ("宜蘭縣", "03"),
    ("花蓮縣", "03"), ("臺東縣", "089"),
]

EMAIL_DOMAINS = ["example.com.tw", "example.tw", "example.com"]

PRODUCTS = [
    ("OF-A4-500", "A4 影印紙 80磅 (500張/包)", "135"),
    ("OF-A4-BOX", "A4 影印紙 80磅 (10包/箱)", "1250"),
    ("OF-PEN-12", "中性筆 0.5mm 藍 (12支/盒)", "180"),
    ("OF-FILE-10", "L 型文件夾 (10入)", "60"),
    ("OF-STAPLER", "釘書機 10號", "95"),
    ("OF-NOTE-5", "便利貼 3x3 (5本)", "110"),
    ("PR-TONER-BK", "雷射印表機碳粉匣 黑", "2380"),
    ("PR-INK-4C", "噴墨墨水 四色組", "1560"),
    ("PR-LASER-A4", "黑白雷射印表機", "5990"),
    ("IT-MOUSE", "無線滑鼠", "490"),
    ("IT-KB", "無線鍵盤", "890"),
    ("IT-MON-24", "24 吋 IPS 螢幕", "4590"),
    ("IT-SSD-1T", "1TB SSD 固態硬碟", "2690"),
    ("IT-NB-14", "14 吋商用筆記型電腦", "32900"),
    ("IT-UPS-1K", "不斷電系統 1000VA", "4200"),
    ("IT-SW-8", "8 埠 Gigabit 交換器", "1290"),
    ("FN-CHAIR", "人體工學辦公椅", "6800"),
    ("FN-DESK-140", "辦公桌 140cm", "5400"),
    ("FN-CAB-3", "三層活動櫃", "3200"),
    ("FD-TEA-OOL", "阿里山烏龍茶禮盒", "1200"),
    ("FD-TEA-BLK", "日月潭紅茶 (茶包100入)", "650"),
    ("FD-PINE", "土鳳梨酥禮盒 (12入)", "480"),
    ("FD-COFFEE", "咖啡豆 1kg", "900"),
    ("FD-WATER", "礦泉水 600ml (24瓶/箱)", "220"),
    ("CL-TISSUE", "抽取式衛生紙 (12包/串)", "189"),
    ("CL-HAND", "洗手乳補充包 2L", "260"),
    ("SV-SETUP", "電腦安裝設定服務 (每台)", "1500"),
    ("SV-MAINT", "年度設備維護合約", "24000"),
    ("SV-TRAIN", "軟體教育訓練 (半日)", "8000"),
    ("SV-DELIV", "大型物件運送服務", "600"),
]

STATUS_WEIGHTS = [
    (Order.Status.PAID, 62),
    (Order.Status.SHIPPED, 14),
    (Order.Status.CONFIRMED, 9),
    (Order.Status.DRAFT, 5),
    (Order.Status.CANCELLED, 10),
]


def random_vat_number(rng):
    while True:
        candidate = f"{rng.randrange(10_000_000, 100_000_000)}"
        if is_valid_vat_number(candidate):
            return candidate


def random_phone(rng, area_code):
    if rng.random() < 0.45:
        return f"09{rng.randrange(10, 100)}-{rng.randrange(0, 1000):03d}-{rng.randrange(0, 1000):03d}"
    digits = 10 - len(area_code)
    number = f"{rng.randrange(2 * 10 ** (digits - 1), 10 ** digits)}"
    return f"({area_code}) {number[:-4]}-{number[-4:]}"


class Command(BaseCommand):
    help = (
        "Load demo customers, products and orders spread over the last twelve "
        "months. Does nothing if data exists, unless --reset is given."
    )

    def add_arguments(self, parser):
        parser.add_argument("--customers", type=int, default=300, help="number of customers (default 300)")
        parser.add_argument("--orders", type=int, default=800, help="number of orders (default 800)")
        parser.add_argument("--seed", type=int, default=2024, help="random seed, for repeatable data (default 2024)")
        parser.add_argument("--reset", action="store_true", help="delete existing customers, products and orders first")

    def handle(self, *args, customers, orders, seed, reset, **options):
        if customers < 1 or orders < 0:
            raise CommandError("--customers must be at least 1 and --orders at least 0.")
        rng = random.Random(seed)

        with transaction.atomic():
            if reset:
                deleted = self.wipe()
                self.stdout.write(f"Deleted existing data ({deleted} rows).")
            elif Customer.objects.exists() or Order.objects.exists() or Product.objects.exists():
                self.stdout.write(
                    self.style.WARNING(
                        "Data already present "
                        f"({Customer.objects.count()} customers, {Product.objects.count()} products, "
                        f"{Order.objects.count()} orders); nothing loaded. "
                        "Use --reset to replace it with demo data."
                    )
                )
                return

            products = self.create_products()
            customer_objs = self.create_customers(rng, customers)
            order_count, line_count = self.create_orders(rng, orders, customer_objs, products)

        self.stdout.write(
            self.style.SUCCESS(
                f"Loaded {len(customer_objs)} customers, {len(products)} products, "
                f"{order_count} orders with {line_count} lines."
            )
        )

    def wipe(self):
        total = 0
        for model in (OrderLine, Order, Customer, Product):
            count, _ = model.objects.all().delete()
            total += count
        return total

    def create_products(self):
        return Product.objects.bulk_create(
            Product(sku=sku, name=name, unit_price=Decimal(price)) for sku, name, price in PRODUCTS
        )

    def create_customers(self, rng, count):
        now = timezone.now()
        used_companies = set()
        customers = []
        for index in range(count):
            surname, surname_latin = rng.choice(SURNAMES)
            given, given_latin = rng.choice(GIVEN_NAMES)
            city, area_code = rng.choice(CITIES)
            company = ""
            vat_number = ""
            if rng.random() < 0.85:
                trade, trade_latin = rng.choice(COMPANY_TRADES)
                for _attempt in range(10):
                    word = rng.choice(COMPANY_WORDS)
                    company = f"{word}{trade}{rng.choice(COMPANY_FORMS)}"
                    if company not in used_companies:
                        break
                    company = f"{city[:2]}{company}"
                used_companies.add(company)
                vat_number = random_vat_number(rng)
                email = f"{given_latin}.{surname_latin}{index}@{trade_latin}.{rng.choice(EMAIL_DOMAINS)}"
            else:
                email = f"{surname_latin}.{given_latin}{index}@{rng.choice(EMAIL_DOMAINS)}"
            customers.append(
                Customer(
                    name=f"{surname}{given}",
                    company=company,
                    vat_number=vat_number,
                    email=email,
                    phone=random_phone(rng, area_code),
                    city=city,
                    created=now - datetime.timedelta(days=rng.randint(365, 3 * 365), minutes=rng.randint(0, 1440)),
                )
            )
        return Customer.objects.bulk_create(customers)

    def create_orders(self, rng, count, customers, products):
        today = timezone.localdate()
        statuses = [status for status, _ in STATUS_WEIGHTS]
        weights = [weight for _, weight in STATUS_WEIGHTS]
        # A minority of customers place most of the orders.
        customer_weights = [rng.paretovariate(1.5) for _ in customers]
        # Cheaper products sell more often.
        product_weights = [1 / float(product.unit_price) ** 0.35 for product in products]

        orders = []
        for _ in range(count):
            day = today - datetime.timedelta(days=rng.randint(0, 364))
            status = rng.choices(statuses, weights)[0]
            # Recent orders are more likely to be still open.
            if (today - day).days < 14 and status == Order.Status.PAID:
                status = rng.choice([Order.Status.CONFIRMED, Order.Status.SHIPPED, Order.Status.PAID])
            customer = rng.choices(customers, customer_weights)[0]
            orders.append(Order(customer=customer, date=day, status=status))
        orders = Order.objects.bulk_create(orders)

        lines = []
        for order in orders:
            chosen = set()
            for _ in range(rng.choices([1, 2, 3, 4, 5], [30, 30, 20, 12, 8])[0]):
                product = rng.choices(products, product_weights)[0]
                if product.pk in chosen:
                    continue
                chosen.add(product.pk)
                price = product.unit_price
                if rng.random() < 0.2:
                    # Occasional negotiated discount of 5-15 %.
                    price = (price * Decimal(rng.choice(["0.95", "0.9", "0.85"]))).quantize(Decimal("1"))
                quantity = rng.choices([1, 2, 3, 5, 10, 20], [35, 25, 15, 12, 8, 5])[0]
                lines.append(OrderLine(order=order, product=product, quantity=quantity, unit_price=price))
        OrderLine.objects.bulk_create(lines, batch_size=500)
        return len(orders), len(lines)
