"""The benchmark of probe beside blackbox_exporter on a loopback HAProxy lab (``./dev bench``).

Not part of the installed package: run it from the repository with ``python -m bench``.
"""
