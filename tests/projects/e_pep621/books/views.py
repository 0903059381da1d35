from django.views.generic import ListView

from .models import Book


class CatalogueView(ListView):
    model = Book
    template_name = "books/catalogue.html"
    context_object_name = "books"
    paginate_by = 20
