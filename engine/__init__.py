"""afterhours engine: the runtime layer (configuration, supervision, mailboxes, codecs).

Nothing in this package imports from ``actors`` or ``api``; see ``docs/architecture.md``.
"""

__version__ = "0.1.0"
