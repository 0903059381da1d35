from django.db import models


class Book(models.Model):
    title = models.CharField(max_length=250)
    author = models.CharField(max_length=150)
    isbn = models.CharField("ISBN", max_length=17, blank=True)
    on_loan = models.BooleanField(default=False)

    class Meta:
        ordering = ["author", "title"]

    def __str__(self):
        return f"{self.title} ({self.author})"
