"""The trio I/O shell around the engine (populated by the gateway issue)."""
