"""Layer 2: how nodes declare themselves, the hookspecs, and the registry built from plugins."""
