"""Monitoring: Prometheus metrics (and later prediction logs, drift, usage)."""
