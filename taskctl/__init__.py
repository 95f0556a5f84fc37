"""taskctl: a command-line client of the task scheduler's HTTP API (standard library only)."""
from taskctl.client import ApiError, Client, Unreachable

__all__ = ["ApiError", "Client", "Unreachable"]
__version__ = "0.1.0"
