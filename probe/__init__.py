"""probe: end-to-end checks of an HTTPS service behind an internal load balancer.

The package exports nothing; each layer is a subpackage (see CONTRIBUTING.md). The command's
entry point is :func:`probe.__main__.main`.
"""
