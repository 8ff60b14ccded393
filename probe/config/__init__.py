"""Configuration: the strict models, their loading from YAML, the plain value parsers and defaults."""
