"""Layer 3: the executor, the cache, devices and model residency."""
