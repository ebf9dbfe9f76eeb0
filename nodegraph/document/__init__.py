"""Layer 1: the graph document — parse, resolve params and links, validate. Knows nothing of torch."""
