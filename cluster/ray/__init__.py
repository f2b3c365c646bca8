"""Hosting workers on Ray: actors, placement, connection and the committee of actors."""
