"""`tutti feedback-server`: provider callbacks (delivered, bounced, complained, opened, clicked)
turned into the records the worker already understands (docs/channels/callbacks.md)."""
