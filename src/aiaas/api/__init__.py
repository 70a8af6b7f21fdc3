"""HTTP edge: app factory, shared dependencies, error rendering, middleware."""
