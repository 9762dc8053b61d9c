"""Chaos and disaster-recovery harness for OpenStack control planes."""

__version__ = "0.1.0"
