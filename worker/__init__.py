"""The Narwhal worker layer: batching, broadcast, quorum, storage and reporting."""
