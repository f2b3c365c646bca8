"""Prometheus metrics of the worker, scrape configuration and Grafana dashboards."""
