"""Gunicorn settings for the newsroom; `gunicorn newsroom.wsgi` reads this file from the
working directory."""

import multiprocessing

bind = "0.0.0.0:8000"
workers = multiprocessing.cpu_count() * 2 + 1
# Recycle workers now and then: some feed parsers leak memory.
max_requests = 1000
max_requests_jitter = 50


def when_ready(server):
    server.log.info("newsroom: workers ready")
