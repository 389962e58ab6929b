"""`ctrail health`: exit 0 when the `ctrail run` or `ctrail worker` processes of this data
directory are alive (their heartbeats are fresh), 1 otherwise. A container health check.

`--endpoint healthz|readyz` asks the process's own ops server instead (`ops:` in the config),
with the configured bearer token: a Kubernetes probe of /healthz and /readyz that keeps the
token out of the pod spec (an httpGet probe can only send a header written in the spec). Over
https when the ops server has a tls_cert_file, trusting that certificate (the probe may reach it
by an address its names do not cover, e.g. 127.0.0.1)."""

from __future__ import annotations

import argparse
import ssl

import httpx

from ctrail.cli.common import add_common, settings_of
from ctrail.errors import ConfigError, UsageError
from ctrail.runtime.health import STALE_AFTER_SECS, stale_roles
from ctrail.runtime.ops import OpsConfig
from ctrail.secrets import resolve_secret

ANY_ADDRESS = ("0.0.0.0", "", "::")


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("health", help="are this data directory's processes alive?")
    parser.add_argument("--endpoint", choices=("healthz", "readyz"), default=None,
                        help="ask this host's ops server (ops: in the config) instead")
    add_common(parser)
    parser.set_defaults(run=run)


def probe(ops: OpsConfig | None, endpoint: str) -> int:
    """GET /healthz or /readyz of the ops server on this host: 0 on 200, else 1."""
    if ops is None:
        raise UsageError("--endpoint needs the ops server configured (ops: in the config)")
    host = "127.0.0.1" if ops.host in ANY_ADDRESS else ops.host
    token = resolve_secret(ops.token).get_secret_value() if ops.token else None
    scheme, verify = ("https", own_certificate(ops)) if ops.tls_cert_file else ("http", True)
    try:
        response = httpx.get(f"{scheme}://{host}:{ops.port}/{endpoint}", timeout=5.0,
                             verify=verify,
                             headers={"Authorization": f"Bearer {token}"} if token else {})
    except httpx.HTTPError as exc:
        print(f"unhealthy: /{endpoint} did not answer: {exc}")
        return 1
    print(f"{'healthy' if response.status_code == 200 else 'unhealthy'}: /{endpoint} "
          f"answered {response.status_code}")
    return 0 if response.status_code == 200 else 1


def own_certificate(ops: OpsConfig) -> ssl.SSLContext:
    """Trust exactly the ops server's own certificate, by whatever address it is reached."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN    # the leaf itself is the anchor
    try:
        context.load_verify_locations(cafile=ops.tls_cert_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"ops: cannot load tls_cert_file: {exc}") from None
    return context


def run(args: argparse.Namespace) -> int:
    if args.endpoint is not None:
        return probe(settings_of(args).ops, args.endpoint)
    fresh, stale = stale_roles(settings_of(args).data_dir)
    if stale or not fresh:
        print(f"unhealthy: no heartbeat for {STALE_AFTER_SECS:.0f} s from "
              f"{', '.join(stale) or 'any process'}")
        return 1
    print(f"healthy: {', '.join(fresh)}")
    return 0
