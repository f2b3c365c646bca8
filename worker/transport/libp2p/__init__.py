"""The libp2p transport: TCP + Noise + Yamux, the signed handshake, a batch stream per peer."""
