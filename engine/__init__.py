"""vacelive engine: generation only, no I/O.

Causal Wan2.1 DiT with a KV cache, the VACE composition wrapper, VAEs, the UMT5 text encoder,
the few-step flow schedule, weight loading and the streaming generator.
"""
