"""The worker's sans-IO cores: state machines driven by events and a clock.

Nothing here imports trio, Ray or libp2p (tests/test_layers.py enforces it).
"""
