"""Typed doors to the untyped corners of the official kubernetes client.

Its generated API classes are annotated; its config loaders, `watch.Watch` and some methods of
`ApiClient` and `RESTResponse` are not. Pynchy calls those only through here: this is the one
module mypy lets call untyped functions (the override in pyproject.toml), every caller stays checked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from kubernetes import config, watch
from kubernetes.client import ApiClient, Configuration
from kubernetes.client.rest import RESTResponse


def load_incluster_config() -> None:
    """The pod's service account; raises ConfigException outside a pod."""
    config.load_incluster_config()


def load_kube_config(
    config_file: str | None = None,
    *,
    client_configuration: Configuration | None = None,
    persist_config: bool = True,
) -> None:
    """A kubeconfig into `client_configuration`, else into the client's default configuration."""
    config.load_kube_config(
        config_file=config_file, client_configuration=client_configuration, persist_config=persist_config
    )


def new_client_from_config(
    config_file: str | None = None, context: str | None = None, *, retries: int | None = None
) -> ApiClient:
    """An ApiClient of its own for a kubeconfig (the default configuration stays untouched); `context`
    picks one of its contexts instead of the current one; `retries` replaces urllib3's default (3) of
    retries per request (0: one attempt, for a command that must answer quickly)."""
    if retries is None:
        client: ApiClient = config.new_client_from_config(config_file=config_file, context=context)
        return client
    configuration = Configuration()
    config.load_kube_config(
        config_file=config_file, context=context, client_configuration=configuration, persist_config=False
    )
    configuration.retries = retries
    return ApiClient(configuration)


def new_incluster_client(*, retries: int | None = None) -> ApiClient:
    """An ApiClient of its own with the pod's service account; raises ConfigException outside a pod."""
    configuration = Configuration()
    config.load_incluster_config(client_configuration=configuration)
    if retries is not None:
        configuration.retries = retries
    return ApiClient(configuration)


def close_client(client: ApiClient) -> None:
    client.close()


def to_json(client: ApiClient, obj: object) -> Any:
    """A model object (V1Node, ...) as JSON-ready dicts and lists, with the API's field names."""
    return client.sanitize_for_serialization(obj)


def read_response(response: RESTResponse) -> bytes | None:
    """Reads the body into `response.data` (and returns it)."""
    data: bytes | None = response.read()
    return data


class Watch:
    """`kubernetes.watch.Watch`: `stream` yields decoded events ({"type", "object", "raw_object"})."""

    def __init__(self) -> None:
        self._watch = watch.Watch()

    def stream(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
        events: Iterator[dict[str, Any]] = self._watch.stream(func, *args, **kwargs)
        return events

    def stop(self) -> None:
        """Ends the stream at its next event (from any thread)."""
        self._watch.stop()
