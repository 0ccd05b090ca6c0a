"""Benchmarks that print figures against a baseline measured in the same run."""
