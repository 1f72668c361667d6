"""The command line: ``afterhours serve|call|simulate|admin|doctor|bench``."""
