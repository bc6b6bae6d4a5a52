"""What the whole app shares and nothing else depends on: its settings (``core.config``)."""
