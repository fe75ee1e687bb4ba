"""The gateway's HTTP APIs, one aiohttp sub-app each with its own authentication and error
rendering: the run API (agent pods), the model proxy (agent pods), the local chat API (people)."""
