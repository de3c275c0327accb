"""A small vLLM-compatible engine for tests and demos (not a product)."""
