"""Build: Dockerfile parsing (to an AST), the build context and ``.dockerignore``, the
builder and its cache. It runs each step through the engine and stores each result as
a layer; it knows nothing of HTTP or the CLI."""
