"""`pynchy-agent`: the program inside an agent pod.

Start-up: settings (environment) -> the Group's config -> memory seed -> workspace clone -> GET /v1/run.
Then two loops until the run ends: the poller long-polls /v1/run/turns/next and queues turns; the
worker hands each to the Conversation (the one long-lived Claude session). The pod exits 0 after
the idle timeout without a turn, on 410 (the run is over) once running turns are answered, and on
SIGTERM (running turns fail with "agent pod is stopping"). Exit 2: invalid settings or config;
exit 1: anything else fatal (401, gateway unreachable, clone failed), with the reason in the
termination log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from claude_agent_sdk import ClaudeAgentOptions, HookMatcher
from claude_agent_sdk.types import HookEvent

from pynchy_agent.client import (
    GatewayUnavailableError,
    RunApiClient,
    RunApiError,
    RunOverError,
    UnauthorizedError,
    backoff,
)
from pynchy_agent.config import ConfigError, GroupConfig, load_config, seed_memory
from pynchy_agent.conversation import Conversation
from pynchy_agent.errors import AgentError
from pynchy_agent.gitclone import GitError, git_environment, prepare_workspace
from pynchy_agent.logs import configure_logging
from pynchy_agent.options import build_options
from pynchy_agent.permissions import PermissionHook, permission_hooks
from pynchy_agent.protocol import Turn, TurnFailed
from pynchy_agent.session import SessionStore
from pynchy_agent.settings import RunnerSettings, SettingsError, load_settings
from pynchy_agent.toolpolicy import Policy
from pynchy_agent.tools import pynchy_server

log = logging.getLogger("pynchy_agent")

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
MAX_POLL_WAIT = 30
BUSY_RETRY_SECONDS = 600  # while turns run, keep trying to reach a restarting gateway this long
STOPPING = "agent pod is stopping"
OUT_OF_TIME = "the agent ran out of time before answering (the Group's agent.timeoutSeconds: {seconds}s)"
# The kubelet counts the deadline from the pod's start, a little before this process started: a stop
# this close to it is the deadline.
DEADLINE_MARGIN_SECONDS = 10
STOP_GRACE_SECONDS = 15  # Kubernetes gives 30 before SIGKILL
MIN_POLL_INTERVAL = 1.0  # a gateway answering 204 at once is never polled in a hot loop


class FatalError(AgentError):
    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def idle_timeout(settings: RunnerSettings, config: GroupConfig) -> int:
    """PYNCHY_IDLE_TIMEOUT_SECONDS when set, else agent.json's idleTimeoutSeconds, else the default."""
    if "idle_timeout_seconds" in settings.model_fields_set or config.agent.idle_timeout_seconds is None:
        return settings.idle_timeout_seconds
    return config.agent.idle_timeout_seconds


class Runner:
    def __init__(
        self, api: RunApiClient, conversation: Conversation, idle_seconds: float, run_timeout: int | None = None
    ) -> None:
        self.api = api
        self.conversation = conversation
        self.idle_seconds = idle_seconds
        self.run_timeout = run_timeout
        self.started = time.monotonic()
        self.turns: asyncio.Queue[Turn] = asyncio.Queue()
        self._working: Turn | None = None  # the turn the worker is handing to the conversation
        self._stop = asyncio.Event()

    def request_stop(self) -> None:
        if not self._stop.is_set():
            log.info("stop requested (SIGTERM)")
        self._stop.set()

    @property
    def busy(self) -> bool:
        return self._working is not None or self.conversation.busy or not self.turns.empty()

    async def run(self) -> int:
        worker = asyncio.create_task(self._work(), name="worker")
        poller = asyncio.create_task(self._poll(), name="poller")
        stop = asyncio.create_task(self._stop.wait(), name="stop")
        try:
            await asyncio.wait({poller, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not self._stop.is_set():
                try:
                    reason = poller.result()
                except Exception as exc:
                    if isinstance(exc, UnauthorizedError):
                        message = f"the gateway refused the run token: {exc.message}"
                    else:  # for example a turn this runner cannot read
                        message = f"polling for turns failed: {type(exc).__name__}: {exc}"
                    await self._abort(worker, message)
                    raise FatalError(message) from None
                log.info("taking no more turns", extra={"reason": reason})
                drain = asyncio.create_task(self._drain())
                await asyncio.wait({drain, stop}, return_when=asyncio.FIRST_COMPLETED)
                if not self._stop.is_set():
                    worker.cancel()
                    await self.conversation.close()
                    log.info("exiting", extra={"reason": reason})
                    return EXIT_OK
                drain.cancel()
            poller.cancel()
            await self._abort(worker, self._stop_message())
            log.info("exiting", extra={"reason": "stopped"})
            return EXIT_OK
        finally:
            for task in (worker, poller, stop):
                task.cancel()

    def _stop_message(self) -> str:
        """Why running turns fail on SIGTERM: the run's deadline when it is (nearly) reached."""
        elapsed = time.monotonic() - self.started
        if self.run_timeout is not None and elapsed >= self.run_timeout - DEADLINE_MARGIN_SECONDS:
            return OUT_OF_TIME.format(seconds=self.run_timeout)
        return STOPPING

    async def _abort(self, worker: asyncio.Task[None], message: str) -> None:
        """Fail every running and queued turn with `message`, within the stop grace period."""
        handing = self._working
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
        running = {entry.turn.id for entry in self.conversation.in_flight}
        queued: list[Turn] = [handing] if handing is not None and handing.id not in running else []
        while not self.turns.empty():
            queued.append(self.turns.get_nowait())

        async def fail_all() -> None:
            await asyncio.gather(
                self.conversation.abort(message),
                *(self.api.post_events(t.id, [TurnFailed(message=message)]) for t in queued),
                return_exceptions=True,
            )

        try:
            await asyncio.wait_for(fail_all(), STOP_GRACE_SECONDS)
        except TimeoutError:
            log.warning("not every turn could be failed before stopping")

    async def _drain(self) -> None:
        while True:
            await self.turns.join()
            await self.conversation.wait_idle()
            await self.conversation.settle()
            if not self.busy:
                return

    async def _work(self) -> None:
        while True:
            turn = await self.turns.get()
            self._working = turn
            try:
                await self.conversation.start(turn)
            finally:
                self._working = None
                self.turns.task_done()

    async def _poll(self) -> str:
        """Queue turns until the run is over ('over') or idle for the idle timeout ('idle')."""
        errors = 0
        wait: float  # seconds the gateway may hold the poll
        retry: float  # seconds to keep retrying an unreachable gateway
        while True:
            if self.busy:
                # No longer than the idle timeout: a poll still waiting when the turn ends delays the exit.
                wait, retry = min(MAX_POLL_WAIT, self.idle_seconds), BUSY_RETRY_SECONDS
            else:
                remaining = self.idle_seconds - (time.monotonic() - self.conversation.last_active)
                if remaining <= 0:
                    return "idle"
                wait, retry = min(remaining, MAX_POLL_WAIT), max(remaining, 5.0)
            started = time.monotonic()
            try:
                turn = await self.api.next_turn(wait, retry_seconds=retry)
            except RunOverError as exc:
                log.info("the run is over", extra={"detail": exc.message})
                return "over"
            except GatewayUnavailableError as exc:
                if self.busy:
                    continue
                log.warning("the gateway stayed unreachable for the idle timeout", extra={"error": str(exc)})
                return "idle"
            except UnauthorizedError:
                raise
            except RunApiError as exc:  # a gateway bug or a refused request: log it, back off, poll again
                log.error("polling for turns failed", extra={"status": exc.status, "error": exc.message})
                await asyncio.sleep(backoff(errors))
                errors += 1
                continue
            errors = 0
            if turn is None:
                elapsed = time.monotonic() - started
                if elapsed < MIN_POLL_INTERVAL:
                    await asyncio.sleep(MIN_POLL_INTERVAL - elapsed)
                continue
            log.info("turn received", extra={"turn": turn.id, "reset_session": turn.reset_session})
            self.conversation.last_active = time.monotonic()
            self.turns.put_nowait(turn)


async def serve(settings: RunnerSettings, config: GroupConfig) -> int:
    git_env = git_environment(settings, Path(os.environ.get("TMPDIR", "/tmp")) / "pynchy-git")
    try:
        cwd = await asyncio.to_thread(prepare_workspace, settings, git_env)
    except GitError as exc:
        raise FatalError(str(exc)) from None

    api = RunApiClient(str(settings.run_api_url), settings.run_token.get_secret_value())
    try:
        try:
            info = await api.run_info()
        except UnauthorizedError as exc:
            raise FatalError(f"the gateway refused the run token: {exc.message}") from None
        except RunOverError:
            log.info("the run is already over")
            return EXIT_OK
        except GatewayUnavailableError as exc:
            raise FatalError(f"the gateway at {settings.run_api_url} cannot be reached: {exc}") from None
        if info.group != settings.group:
            log.warning("the run belongs to another group than PYNCHY_GROUP", extra={"run_group": info.group})
        group_mode = info.context_mode == "group"
        sessions = SessionStore(settings.state_dir, persist=group_mode)
        initial = sessions.load() if group_mode else None
        resume = initial.session_id if initial else None
        log.info("run started", extra={"context_mode": info.context_mode, "cwd": str(cwd), "resume": resume})

        hooks = tool_policy_hooks(api, config, lambda: conversation.current_turn_id)

        def make_options(resume: str | None) -> ClaudeAgentOptions:
            return build_options(
                settings,
                config,
                cwd=cwd,
                resume=resume,
                pynchy=pynchy_server(api, lambda: conversation.request_reset()),
                env=git_env,
                stderr=lambda line: logging.getLogger("claude").info(line.rstrip()),
                hooks=hooks,
            )

        conversation = Conversation(
            make_options=make_options, api=api, sessions=sessions, home=settings.home, initial=initial
        )
        runner = Runner(api, conversation, idle_timeout(settings, config), settings.run_timeout_seconds)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, runner.request_stop)
        prewarm = asyncio.create_task(conversation.prewarm())
        try:
            return await runner.run()
        finally:
            prewarm.cancel()
    finally:
        await api.aclose()


def write_termination_log(path: Path, message: str) -> None:
    """Kubernetes shows this file as the container's termination message (at most 4096 bytes)."""
    with contextlib.suppress(OSError):
        path.write_bytes(message.encode()[:4096])


def fail(message: str, code: int, termination_log: Path) -> int:
    print(f"pynchy-agent: {message}", file=sys.stderr, flush=True)
    write_termination_log(termination_log, message)
    return code


DEFAULT_APPROVAL_TIMEOUT = 300


def tool_policy_hooks(
    api: RunApiClient, config: GroupConfig, current_turn: Callable[[], str | None]
) -> dict[HookEvent, list[HookMatcher]] | None:
    """The PreToolUse hook when the Group has a tool policy that does not simply allow everything."""
    policy = Policy.of(config.agent.tool_policy)
    if policy.default == "allow" and all(rule.action == "allow" for rule in policy.rules):
        return None
    servers = [s.name for s in config.agent.mcp_servers]
    timeout = int((config.agent.tool_policy or {}).get("approvalTimeoutSeconds") or DEFAULT_APPROVAL_TIMEOUT)
    return permission_hooks(PermissionHook(api, policy, servers, current_turn), timeout)


def _stop_during_start_up(signum: int, frame: object) -> None:
    """SIGTERM before the first poll: no turn is ours yet, so leave at once (a clone in progress is
    abandoned; its staging folder is removed by the next pod)."""
    print("pynchy-agent: stopped during start-up", file=sys.stderr, flush=True)
    os._exit(EXIT_OK)


def run() -> int:
    signal.signal(signal.SIGTERM, _stop_during_start_up)  # serve() hands SIGTERM to the runner later
    termination_log = Path(os.environ.get("PYNCHY_TERMINATION_LOG") or "/dev/termination-log")
    try:
        settings = load_settings()
    except SettingsError as exc:
        configure_logging(os.environ.get("PYNCHY_LOG_LEVEL", "INFO"))
        return fail(str(exc), EXIT_INVALID, termination_log)
    termination_log = settings.termination_log
    configure_logging(
        settings.log_level, run=settings.run_name, namespace=settings.namespace or "", group=settings.group
    )
    try:
        config = load_config(settings.config_dir)
        if config.agent.has_memory_seed and config.memory_seed is None:
            log.warning("agent.json promises a memory seed but CLAUDE.md is missing from the ConfigMap")
        if config.agent.directive_count and config.directives is None:
            log.warning("agent.json promises directives but directives.md is missing from the ConfigMap")
        if seed_memory(config.memory_seed, settings.home):
            log.info("memory seeded", extra={"path": str(settings.home / ".claude" / "CLAUDE.md")})
    except ConfigError as exc:
        return fail(f"invalid Group configuration: {exc}", EXIT_INVALID, termination_log)
    try:
        return asyncio.run(serve(settings, config))
    except FatalError as exc:
        return fail(str(exc), exc.code, termination_log)
    except Exception as exc:
        log.exception("the agent runner crashed")
        return fail(f"the agent runner crashed: {type(exc).__name__}: {exc}", EXIT_FAILED, termination_log)


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
