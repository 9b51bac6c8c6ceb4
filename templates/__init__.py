"""Jinja2 templates, installed as the package `derive.templates` (see pyproject.toml)."""
