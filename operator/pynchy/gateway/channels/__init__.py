"""Channels people talk through (Slack, the local channel) and what they share."""
