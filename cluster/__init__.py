"""Running committees: local committees, load clients, the local and Ray drivers, the CLI."""
