"""Layer 4: the `nodegraph` command line (typer + rich)."""
