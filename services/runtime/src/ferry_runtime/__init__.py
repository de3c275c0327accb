"""Ferry's runtime sidecar: engine KV-cache events (vLLM wire format) → ``ferry.kv.<ns>.<model>.<pod>``."""
