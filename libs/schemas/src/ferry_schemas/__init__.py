"""Ferry's shared contracts: Kubernetes kinds, bus envelopes, subjects and streams."""
