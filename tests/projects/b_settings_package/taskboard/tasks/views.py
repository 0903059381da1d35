from django.views.generic import TemplateView

from .models import Task


class HomeView(TemplateView):
    template_name = "pages/home.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["open_count"] = Task.objects.filter(done=False).count()
        context["done_count"] = Task.objects.filter(done=True).count()
        return context


home = HomeView.as_view()
