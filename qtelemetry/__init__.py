"""qtelemetry: open telemetry for quantum networks (QKD and entanglement links)."""

__version__ = "0.1.0"
