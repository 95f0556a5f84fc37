"""Lazily built boto3 clients, one per service and endpoint, with standard retries.

boto3 reads AWS_ENDPOINT_URL itself, so pointing the app at moto, LocalStack or
DynamoDB Local needs no code here; the cache key includes it so tests can switch.
"""
import threading

import boto3
from botocore.config import Config

from chalicelib import config

# Bounded calls: a run must end well inside its 120 s lease (botocore's defaults are 60 s
# per connect and per read, five times over).
CONNECT_TIMEOUT, READ_TIMEOUT = 5, 15
_RETRIES = Config(retries={"max_attempts": 5, "mode": "standard"},
                  connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT)
_clients: dict = {}
_lock = threading.Lock()


def _key(service: str):
    return service, config.endpoint_url(), config.region()


def client(service: str):
    """A cached boto3 client for service (throttling retried by botocore's standard mode)."""
    key = _key(service)
    found = _clients.get(key)
    if found is None:
        with _lock:
            found = _clients.get(key)
            if found is None:
                found = boto3.session.Session().client(service, config=_RETRIES)
                _clients[key] = found
    return found


def reset() -> None:
    """Forget every cached client (tests switch between moto backends)."""
    with _lock:
        _clients.clear()
