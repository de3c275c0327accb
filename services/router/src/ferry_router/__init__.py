"""OpenAI-compatible gateway with load-aware and PD-aware scheduling."""
