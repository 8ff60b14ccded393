"""Tools of the repository that are not part of probe: ``./dev dist`` (dist.py)."""
