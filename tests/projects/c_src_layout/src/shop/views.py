from django.shortcuts import render

from .models import Product


def index(request):
    products = Product.objects.filter(in_stock=True).order_by("name")
    return render(request, "shop/index.html", {"products": products})
