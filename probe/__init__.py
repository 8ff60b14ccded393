"""probe: end-to-end checks of an HTTPS service behind an internal load balancer."""

__version__ = "0.1.0"
