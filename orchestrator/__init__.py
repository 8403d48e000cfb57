"""Tutti's core: the pure decision engine, journey DSL, codecs, config, CLI and senders."""

__version__ = "0.1.0"
