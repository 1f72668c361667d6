"""One TLS client context for the whole process.

``ssl.create_default_context()`` loads the system's CA bundle: about a megabyte of memory
and milliseconds of CPU each time. Made per call (the model's ``wss://`` socket, an HTTP
client for the business's functions), it was most of a call's memory; one shared context
is safe (it is only read after creation) and is made on first use.
"""

from __future__ import annotations

import ssl
from functools import cache


@cache
def client_context() -> ssl.SSLContext:
    return ssl.create_default_context()
