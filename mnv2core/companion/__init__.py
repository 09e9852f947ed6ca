"""Companion analyses."""
