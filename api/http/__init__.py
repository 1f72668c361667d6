"""The HTTP edge: the ASGI app, its one route table, and every handler it serves."""
