"""Embedded default configuration files."""
