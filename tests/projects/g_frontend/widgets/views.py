from django.shortcuts import render

from .models import Widget


def board(request):
    widgets = Widget.objects.order_by("name")
    return render(request, "widgets/board.html", {"widgets": widgets, "widget_count": len(widgets)})
