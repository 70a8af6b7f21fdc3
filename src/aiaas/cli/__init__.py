"""The ``aiaas`` command line (Typer)."""
