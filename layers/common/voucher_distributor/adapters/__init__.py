"""Adapters: one package or module per external service."""
