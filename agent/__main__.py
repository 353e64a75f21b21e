"""``pta-agent``: enrol once with a token, then run, dialling out to the broker.

Exit codes: 0 done (enrolled; or stopped when asked, everything sent to it answered), 1
refused or failed (one line says why; or the drain's 15 s ran out), 2 usage error, 78 the
configuration is wrong (one line names the setting: a misspelt key, a wrong service-account
password, a base DN or login attribute the directory does not have; a directory that is merely
unreachable is not one: the agent starts, warns and retries), 130 interrupted (Ctrl-C while
enrolling), 128 + N stopped by a second signal N before its drain finished (143 for two
SIGTERMs).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

import structlog

from agent import preflight
from agent.config import AgentConfig, load_config
from agent.directory import LdapDirectory
from agent.enrol import enrol
from agent.health import Health
from agent.identity import AgentIdentity
from agent.metrics import OFF, AgentMetrics, Counts
from agent.preflight import ConfigurationError
from agent.runner import Agent
from pta import logging as pta_logging
from pta.config import parse_endpoint
from pta.errors import DirectoryUnavailable, PtaError

log = structlog.get_logger()
#: How long a stopping agent may take to answer what it was sent (a second signal: at once).
DRAIN_GRACE = 15.0
INTERRUPTED = 130
#: EX_CONFIG (sysexits.h): a supervisor can be told not to restart an agent that cannot work
#: until someone fixes its configuration (systemd: RestartPreventExitStatus=78).
CONFIGURATION_ERROR = 78


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pta-agent", description=__doc__)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--log-format", choices=["json", "console"], default=None)
    commands = parser.add_subparsers(dest="command", required=True)

    enroll = commands.add_parser("enroll", help="enrol with a one-time token")
    enroll.add_argument("--broker", required=True, help="the broker's public host:port")
    enroll.add_argument("--token", help="token from `pta-broker token create` (or stdin: -)")
    enroll.add_argument("--state-dir", required=True)

    run = commands.add_parser("run", help="connect to the broker and validate sign-ins")
    run.add_argument("--state-dir")
    run.add_argument("--config", help="TOML file with the same keys (and [[directory]] tables)")
    run.add_argument(
        "--ldap-url",
        action="append",
        help="ldap://host:port or ldaps://host:port; repeat for failover, in order",
    )
    run.add_argument("--base-dn", help="where users are searched")
    run.add_argument("--bind-dn", help="service account that searches (default: anonymous)")
    run.add_argument("--bind-password-file", help="file holding the service account's password")
    run.add_argument("--login-attribute", help="attribute users sign in with (default uid)")
    run.add_argument(
        "--password-policy-dn",
        help="OpenLDAP ppolicy entry to report the lockout threshold of (default: search)",
    )
    run.add_argument("--ca-file", help="CA certificate for ldaps:// or StartTLS")
    run.add_argument("--kind", choices=["openldap", "ad"], help="directory kind (default openldap)")
    run.add_argument(
        "--start-tls", action="store_true", default=None, help="StartTLS on ldap:// URLs"
    )
    run.add_argument("--max-in-flight", help="validations at once (default 32)")
    run.add_argument(
        "--metrics-listen", help="host:port serving Prometheus metrics at /metrics (default: none)"
    )
    run.add_argument(
        "--pool-size",
        help="binds at once per directory, and LDAP worker threads for searches (default 8)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = _parser().parse_args(argv)
    pta_logging.configure(
        level=args.log_level, json=None if args.log_format is None else args.log_format == "json"
    )
    os.umask(0o077)
    try:
        if args.command == "enroll":
            token = args.token if args.token not in (None, "-") else sys.stdin.readline()
            identity = asyncio.run(enrol(args.broker, token.strip(), Path(args.state_dir)))
            sys.stdout.write(f"enrolled as {identity.agent_id} of {identity.tenant}\n")
            return 0
        try:
            config = load_config(vars(args), os.environ)
        except (ValueError, OSError) as error:  # OSError: the password file is missing
            sys.stderr.write(f"pta-agent: {error}\n")
            return CONFIGURATION_ERROR
        return asyncio.run(_run(config))
    except ConfigurationError as error:
        sys.stderr.write(f"pta-agent: {error.message}\n")
        return CONFIGURATION_ERROR
    except (PtaError, ValueError, FileNotFoundError) as error:
        sys.stderr.write(f"pta-agent: {getattr(error, 'message', error)}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("pta-agent: interrupted\n")
        return INTERRUPTED


async def _run(config: AgentConfig) -> int:
    identity = AgentIdentity.load(config.state_dir)  # Fails early when never enrolled.
    metrics = _serve_metrics(config)
    counted = Health(
        (url for d in config.directories for url in d.urls), OFF if metrics is None else metrics
    )
    directories = await _checked_directories(config, counted)

    def directory_for(domain: str) -> LdapDirectory | None:
        chosen = config.directory_for(domain)
        return next((d for d in directories if d.config is chosen), None)

    domains = tuple(sorted({d for c in config.directories for d in c.domains}))
    if any(not c.domains for c in config.directories):
        domains = ()  # One directory serves all: offer every domain the tenant verified.
    agent = Agent(
        config.state_dir,
        directory_for,
        domains=domains,
        max_in_flight=config.max_in_flight,
        directories=config.hello_directories(),
        metrics=metrics,
        health=counted,
    )
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    if task is None:  # pragma: no cover - asyncio.run always runs a task
        raise RuntimeError("no running task")
    signals: list[int] = []

    def on_signal(signum: int) -> None:
        signals.append(signum)
        if len(signals) == 1:  # Drain: no new work, answer what was sent, then exit.
            log.info("agent.stopping", signal=signal.Signals(signum).name, drain_s=DRAIN_GRACE)
            agent.stop()
            loop.call_later(DRAIN_GRACE, task.cancel)
        else:
            task.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    log.info("agent.starting", agent_id=identity.agent_id, endpoint=identity.agent_endpoint)
    code = 0
    try:
        await agent.run()
    except asyncio.CancelledError:
        log.warning("agent.stopped_before_drained")
        # A second signal: 128 + its number, as a shell reports a killed program; the drain's
        # grace ran out: 1. Either way a supervisor sees that sign-ins may have been cut.
        code = 128 + signals[1] if len(signals) > 1 else 1
    finally:
        for directory in directories:
            directory.close()
        if metrics is not None:
            metrics.close()
    log.info("agent.stopped", exit_code=code)
    return code


def _serve_metrics(config: AgentConfig) -> AgentMetrics | None:
    """Serve ``/metrics`` when asked to (``--metrics-listen``).

    Raises:
        ConfigurationError: When its address cannot be bound.
    """
    if not config.metrics_listen:
        return None
    metrics = AgentMetrics(url for d in config.directories for url in d.urls)
    host, port = parse_endpoint(config.metrics_listen)
    try:
        bound = metrics.serve(host, port)
    except OSError as error:
        raise ConfigurationError(
            f"cannot serve metrics on {config.metrics_listen} (--metrics-listen):"
            f" {error.strerror or error}"
        ) from None
    log.info("agent.metrics", listen=f"{host}:{bound}")
    return metrics


async def _checked_directories(config: AgentConfig, metrics: Counts) -> list[LdapDirectory]:
    """Every configured directory, each checked against the directory itself, side by side.

    Raises:
        ConfigurationError: The first wrong setting a directory reported (all are closed).
    """
    directories = [LdapDirectory(d, metrics=metrics) for d in config.directories]
    checks = [asyncio.to_thread(preflight.check, d) for d in directories]
    results = await asyncio.gather(*checks, return_exceptions=True)
    for directory, done in zip(directories, results, strict=True):
        if isinstance(done, DirectoryUnavailable):
            # Not a configuration error: start, and try it again with each sign-in.
            urls = list(directory.config.urls)
            log.warning("directory.unreachable_at_start", urls=urls, reason=done.message)
        elif isinstance(done, BaseException):
            for opened in directories:
                opened.close()
            raise done
    return directories


if __name__ == "__main__":
    sys.exit(main())
