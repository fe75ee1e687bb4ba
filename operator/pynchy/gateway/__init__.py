"""The gateway: channels, the conversation store, the run API agent pods call, and the model proxy."""
