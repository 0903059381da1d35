from django.shortcuts import render

from .models import Entry


def index(request):
    return render(request, "guestbook/index.html", {
        "entry_count": Entry.objects.count(),
        "entries": Entry.objects.order_by("-created")[:10],
    })
