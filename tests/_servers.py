"""A server in a background thread, for tests against real HTTP."""

from superalign.serve import background as running

__all__ = ["running"]
