from . import views

# Exact paths answered before any other middleware runs. This keeps the
# checks cheap (no session, CSRF or locale work) and makes them answer for
# any Host header, so a local probe such as
#   curl http://127.0.0.1:8000/healthz/
# works even when ALLOWED_HOSTS lists only the public host name.
OPERATIONAL_PATHS = {
    "/healthz/": views.healthz,
    "/version/": views.version,
}


class HealthCheckMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        view = OPERATIONAL_PATHS.get(request.path_info)
        if view is not None:
            return view(request)
        return self.get_response(request)
