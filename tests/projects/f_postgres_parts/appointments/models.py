from django.db import models


class Appointment(models.Model):
    patient = models.CharField(max_length=120)
    starts_at = models.DateTimeField()
    notes = models.TextField(blank=True)

    class Meta:
        ordering = ["starts_at"]
        indexes = [models.Index(fields=["starts_at"])]

    def __str__(self):
        return f"{self.patient} at {self.starts_at:%Y-%m-%d %H:%M}"
