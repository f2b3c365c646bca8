"""Shipped test support: the transport contract suite and an in-memory transport."""
