"""Schemas shared by the domain and the adapters (no I/O here)."""
