"""The Chalice application class the app is built on."""
import threading

from chalice import Chalice


class ConcurrentChalice(Chalice):
    """Chalice with `current_request` and `lambda_context` kept per thread.

    Chalice keeps the request being handled on the app object. Lambda runs one request per
    process at a time, but `make dev`'s server (chalice's LocalDevServer, which unlike the
    `chalice local` command does not wrap the app per thread) serves each request on its own
    thread, so a handler could read the body of a request that arrived on another thread
    meanwhile: under concurrent POSTs tasks were stored with another request's run_at
    (bench/load_restart.py saw deliveries 'early' by up to 8 s)."""

    def __init__(self, *args, **kwargs):
        # Before Chalice's own __init__, which already sets current_request.
        self._per_thread = threading.local()
        super().__init__(*args, **kwargs)

    @property
    def current_request(self):
        return getattr(self._per_thread, "current_request", None)

    @current_request.setter
    def current_request(self, request) -> None:
        self._per_thread.current_request = request

    @property
    def lambda_context(self):
        return getattr(self._per_thread, "lambda_context", None)

    @lambda_context.setter
    def lambda_context(self, context) -> None:
        self._per_thread.lambda_context = context
