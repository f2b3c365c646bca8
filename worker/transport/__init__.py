"""Pluggable worker-to-worker transports (plain TCP baseline; libp2p)."""
