"""Builders of real image sets from Debian packages, one module per package (see common.py)."""
