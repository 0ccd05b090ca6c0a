"""Lookout worker."""
