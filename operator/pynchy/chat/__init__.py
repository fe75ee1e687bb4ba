"""`pynchy chat`: talk to a Group through the gateway's local channel (docs/chat.md)."""
