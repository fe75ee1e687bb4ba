"""The exception hierarchy: what each type means to a caller, and the work queue acting on it."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from kubernetes.client import ApiClient, Configuration
from structlog.testing import capture_logs

from pynchy.devnode.client import Kube
from pynchy.errors import NotFoundError, PynchyError, RefusedError, TemporaryError
from pynchy.kube.api import KubeApi, KubeError, KubeNotFoundError, TemporaryKubeError, kube_error
from pynchy.operator.workqueue import WorkQueue

WAIT = 5.0  # seconds a test waits for something that should happen at once
Logs = list[MutableMapping[str, Any]]


# -- the hierarchy --------------------------------------------------------------------


def test_not_found_is_a_lookup_error_so_existing_handlers_keep_working() -> None:
    with pytest.raises(LookupError):
        raise NotFoundError("Group ns/g does not exist")
    gone = kube_error(404, "NotFound", 'groups.pynchy.dev "g" not found')
    assert isinstance(gone, KubeNotFoundError)
    assert isinstance(gone, NotFoundError | LookupError | KubeError | PynchyError)
    assert not isinstance(gone, TemporaryError)


@pytest.mark.parametrize(
    ("status", "temporary"),
    [
        (0, True),
        (408, True),
        (409, True),
        (429, True),
        (500, True),
        (503, True),
        (400, False),
        (403, False),
        (422, False),
    ],
)
def test_kube_errors_are_temporary_exactly_for_transient_statuses(status: int, temporary: bool) -> None:
    exc = kube_error(status, "Reason", "message", retry_after=2.0)
    assert isinstance(exc, KubeError)
    assert isinstance(exc, TemporaryError) is temporary
    assert not isinstance(exc, NotFoundError)
    if isinstance(exc, TemporaryError):
        assert exc.retry_after == 2.0


def test_a_refusal_carries_a_condition_reason_and_message() -> None:
    exc = RefusedError("InvalidSchedule", "spec.cron: 'nope' is not a cron expression")
    assert (exc.reason, exc.message, str(exc)) == (
        "InvalidSchedule",
        "spec.cron: 'nope' is not a cron expression",
        "spec.cron: 'nope' is not a cron expression",
    )
    assert not isinstance(exc, TemporaryError)


# -- both Kubernetes clients against a scripted API server ----------------------------

Reply = tuple[int, dict[str, str], dict[str, Any]]


def _status(code: int, reason: str, message: str, **details: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": "Status", "status": "Failure", "code": code, "reason": reason, "message": message}
    if details:
        body["details"] = details
    return body


NOT_FOUND: Reply = (404, {}, _status(404, "NotFound", "not found"))


@contextlib.asynccontextmanager
async def api_server(replies: dict[str, Reply]) -> AsyncIterator[str]:
    """An HTTP server answering each path with the reply the test puts in `replies`."""

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        status, headers, body = replies.get(request.path, NOT_FOUND)
        return web.json_response(body, status=status, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


GROUP = "/apis/pynchy.dev/v1alpha1/namespaces/ns/groups/g"
THROTTLED: Reply = (429, {"Retry-After": "7"}, _status(429, "TooManyRequests", "slow down", retryAfterSeconds=1))
UNAVAILABLE: Reply = (503, {}, _status(503, "ServiceUnavailable", "etcd is busy", retryAfterSeconds=3))
INVALID: Reply = (422, {}, _status(422, "Invalid", "spec.x: Required value"))


def test_the_operator_client_raises_typed_errors_with_the_servers_retry_after() -> None:
    replies: dict[str, Reply] = {}

    async def main() -> None:
        async with api_server(replies) as url:
            await against(url)

    async def against(url: str) -> None:
        config = Configuration(host=url)
        config.retries = False  # urllib3 itself would first wait out a 429's Retry-After three times
        api = KubeApi(ApiClient(config), threads=1)
        try:
            replies[GROUP] = THROTTLED
            with pytest.raises(TemporaryKubeError) as throttled:
                await api.get("Group", "ns", "g")
            assert (throttled.value.status, throttled.value.retry_after) == (429, 7.0)  # the header first

            replies[GROUP] = UNAVAILABLE  # no header: the Status' details.retryAfterSeconds
            with pytest.raises(TemporaryError) as unavailable:
                await api.get("Group", "ns", "g")
            assert unavailable.value.retry_after == 3.0

            replies[GROUP + "/status"] = INVALID
            with pytest.raises(KubeError) as invalid:
                await api.patch_status("Group", "ns", "g", {})
            assert not isinstance(invalid.value, TemporaryError)
            assert (invalid.value.reason, invalid.value.message) == ("Invalid", "spec.x: Required value")

            replies.clear()
            assert await api.get("Group", "ns", "g") is None
            with pytest.raises(LookupError):
                await api.patch_status("Group", "ns", "g", {})
        finally:
            api.close()

        unreachable = KubeApi(ApiClient(Configuration(host="http://127.0.0.1:1")), threads=1)
        try:
            with pytest.raises(TemporaryKubeError) as refused:
                await unreachable.get("Group", "ns", "g")
            assert (refused.value.status, refused.value.retry_after) == (0, None)
        finally:
            unreachable.close()

    asyncio.run(main())


def test_the_dev_node_client_raises_the_same_types(tmp_path: Path) -> None:
    replies: dict[str, Reply] = {}

    async def main() -> None:
        async with api_server(replies) as url:
            await against(url)

    async def against(url: str) -> None:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "c", "cluster": {"server": url}}],
                    "users": [{"name": "u", "user": {}}],
                    "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                    "current-context": "x",
                }
            )
        )
        kube = Kube(kubeconfig)
        await kube.open()
        try:
            replies[GROUP] = THROTTLED
            with pytest.raises(TemporaryKubeError) as throttled:
                await kube.get(GROUP)
            assert throttled.value.retry_after == 7.0
            replies[GROUP] = INVALID
            with pytest.raises(KubeError) as invalid:
                await kube.merge_patch(GROUP, {})
            assert not isinstance(invalid.value, TemporaryError)
            del replies[GROUP]
            assert await kube.get(GROUP) is None
            with pytest.raises(KubeNotFoundError):
                await kube.merge_patch(GROUP, {})
        finally:
            await kube.close()

    asyncio.run(main())


# -- the work queue decides by type ---------------------------------------------------


def _failures(logs: Logs) -> Logs:
    return [e for e in logs if e["event"] == "reconcile failed; retrying"]


Reconcile = Callable[[WorkQueue, str], Awaitable[None]]


async def drive(reconcile: Reconcile, keys: list[str], done: asyncio.Event, **delays: float) -> Logs:
    """A one-worker queue given `keys`, until `done` is set; its log."""
    q: WorkQueue

    async def call(key: str) -> None:
        await reconcile(q, key)

    q = WorkQueue(call, workers=1, **delays)
    with capture_logs() as logs:
        q.start()
        for key in keys:
            q.add(key)
        await asyncio.wait_for(done.wait(), WAIT)
        await q.stop()
    return logs


def test_the_queue_retries_a_temporary_error_after_its_retry_after_without_a_traceback() -> None:
    calls = 0
    retried = asyncio.Event()

    async def reconcile(q: WorkQueue, key: str) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise TemporaryError("throttled", retry_after=0.2)
        retried.set()

    # The backoff alone would wait 30 s: a retry within WAIT can only be the retry_after.
    logs = asyncio.run(drive(reconcile, ["k"], retried, base_delay=30.0, max_delay=60.0))
    (failure,) = _failures(logs)
    assert failure["retry_in"] == 0.2
    assert failure["exc_info"] is False


@pytest.mark.parametrize(
    ("error", "traceback"), [(TemporaryError("etcd is busy"), False), (RuntimeError("a bug"), True)]
)
def test_the_queue_backs_off_without_retry_after_and_logs_a_traceback_only_for_the_unexpected(
    error: Exception, traceback: bool
) -> None:
    probed = asyncio.Event()
    delay: float | None = None

    async def reconcile(q: WorkQueue, key: str) -> None:
        nonlocal delay
        if key == "failing":
            raise error
        delay = q.scheduled_in("failing")  # one worker: the failure is fully handled by now
        probed.set()

    logs = asyncio.run(drive(reconcile, ["failing", "probe"], probed, base_delay=30.0, max_delay=60.0))
    assert delay is not None
    assert 29.0 < delay <= 36.0  # the backoff's first step, with at most 20 % jitter
    (failure,) = _failures(logs)
    assert failure["exc_info"] is traceback


def test_the_queue_does_not_retry_a_refusal() -> None:
    seen: list[str] = []
    done = asyncio.Event()
    pending: float | None = None

    async def reconcile(q: WorkQueue, key: str) -> None:
        nonlocal pending
        seen.append(key)
        if key == "refused":
            raise RefusedError("InvalidSpec", "spec.x is required")
        if key == "b":
            q.add("c")  # a retry of "refused" at once would run before "c"
        if key == "c":
            pending = q.scheduled_in("refused")  # and a later one would be a pending timer
            done.set()

    logs = asyncio.run(drive(reconcile, ["refused", "b"], done, base_delay=0.0, max_delay=0.0))
    assert seen == ["refused", "b", "c"]
    assert pending is None
    assert not _failures(logs)
    (refusal,) = [e for e in logs if e["event"] == "reconcile refused; not retrying"]
    assert (refusal["reason"], refusal["error"]) == ("InvalidSpec", "spec.x is required")
