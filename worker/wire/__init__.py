"""Worker wire formats: msgpack messages and the one length-prefixed frame codec."""
