"""The composition root: the supervision tree, the worker processes, the watchdog and
the drain. The one place that knows every layer; only the CLI imports it."""
