"""Image nodes: load, save, resize, crop, pad, masks. (Filled in by the engine/diffusion work.)"""
