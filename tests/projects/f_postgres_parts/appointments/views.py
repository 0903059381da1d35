from django.shortcuts import render
from django.utils import timezone

from .models import Appointment


def today(request):
    now = timezone.localtime()
    todays = Appointment.objects.filter(starts_at__date=now.date())
    return render(request, "appointments/today.html", {
        "today": now.date(),
        "appointments": todays,
        "total": Appointment.objects.count(),
    })
