from django.contrib import admin

from .models import Book


@admin.register(Book)
class BookAdmin(admin.ModelAdmin):
    list_display = ["title", "author", "on_loan"]
    list_filter = ["on_loan"]
    search_fields = ["title", "author", "isbn"]
