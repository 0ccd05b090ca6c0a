"""Lookout detectors."""
