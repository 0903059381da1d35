from django.db import models


class Widget(models.Model):
    name = models.CharField(max_length=100, unique=True)
    is_up = models.BooleanField(default=True)
    checked_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return self.name
