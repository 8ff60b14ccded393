"""Rendering of results (text, JSON document, hints); never judges."""
