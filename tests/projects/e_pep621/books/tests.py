import pytest
from django.urls import reverse

from .models import Book


@pytest.mark.django_db
def test_catalogue_counts_books(client):
    Book.objects.create(title="Emma", author="Jane Austen")
    response = client.get(reverse("catalogue"))
    assert response.status_code == 200
    assert b"1 book in the catalogue" in response.content
