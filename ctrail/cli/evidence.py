"""`ctrail evidence export --from TS --to TS --out FILE | verify FILE | verify --store |
verify --remote | restore | expire`."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from ctrail.cli.common import add_common, settings_of
from ctrail.errors import CtrailError, Unavailable, UsageError
from ctrail.query import parse_time
from ctrail.settings import Settings
from sinks.evidence import EvidenceConfig
from sinks.evidence.archive import EvidenceArchive

if TYPE_CHECKING:
    from sinks.evidence.remote import RemoteArchive


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("evidence", help="export, verify and expire the evidence archive")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    export = actions.add_parser("export", help="a self-contained, verifiable tar bundle")
    export.add_argument("--from", dest="time_from", required=True, help="ISO 8601 time or now-30d")
    export.add_argument("--to", dest="time_to", default="now", help="ISO 8601 time (default now)")
    export.add_argument("--out", type=Path, required=True, help="the bundle to write (.tar)")
    add_common(export)
    export.set_defaults(run=run_export)
    verify = actions.add_parser("verify", help="name every modified, missing, inserted, "
                                "reordered or truncated record")
    target = verify.add_mutually_exclusive_group(required=True)
    target.add_argument("bundle", nargs="?", type=Path, help="an exported bundle")
    target.add_argument("--store", action="store_true", help="the archive in the data directory")
    target.add_argument("--remote", action="store_true", help="the archive in the data "
                        "directory and its copy in object storage (evidence.remote)")
    verify.add_argument("--public-key", type=Path, help="PEM public key to check signatures "
                        "with (default: evidence.public_key, the public half of "
                        "evidence.signing_key, else the one beside the archive or in the bundle)")
    add_common(verify)
    verify.set_defaults(run=run_verify)
    restore = actions.add_parser("restore", help="rebuild a lost archive (or its lost files) "
                                 "from object storage (evidence.remote), then verify it")
    restore.add_argument("--public-key", type=Path, help="as for verify")
    add_common(restore)
    restore.set_defaults(run=run_restore)
    expire = actions.add_parser("expire", help="delete what retention allows now (tombstoned)")
    add_common(expire)
    expire.set_defaults(run=run_expire)


def _config(settings: Settings) -> EvidenceConfig:
    # Reading an archive needs no `evidence:` section; only writing one does.
    return settings.evidence or EvidenceConfig()


def run_export(args: argparse.Namespace) -> int:
    from ctrail.audit.trail import record
    from sinks.evidence.export import export

    settings = settings_of(args)
    time_from, time_to = parse_time(args.time_from), parse_time(args.time_to)
    if time_from >= time_to:
        raise UsageError("--from must be before --to")
    root = _config(settings).root(settings.data_dir)
    _seal_due(settings)
    summary = export(root, time_from, time_to, args.out)
    record(settings, "evidence-export", {"from": time_from.isoformat(), "to": time_to.isoformat(),
                                         "out": str(args.out.resolve()),
                                         "segments": summary.segments,
                                         "records": summary.records})
    print(f"exported {summary.records} records in {summary.segments} segments to {summary.path}")
    return 0


def _seal_due(settings: Settings) -> None:
    """Seal what is due first, unless `ctrail run` owns the archive (it seals on its own)."""
    if settings.evidence is None:
        return
    try:
        archive = EvidenceArchive.open_shared(settings.evidence, settings.data_dir)
    except Unavailable:
        return
    try:
        archive.seal_due()
    finally:
        archive.close()


def run_verify(args: argparse.Namespace) -> int:
    from ctrail.audit.trail import record
    from sinks.evidence.export import unpack
    from sinks.evidence.keys import trusted_key, tsa_trust
    from sinks.evidence.open_segment import check_open
    from sinks.evidence.verify import Result, verify

    settings = settings_of(args)
    config = _config(settings)
    args.store = args.store or args.remote
    with tempfile.TemporaryDirectory(prefix="ctrail-verify-") as tmp:
        if args.store:
            root, only = config.root(settings.data_dir), None
            if not (root / "manifests").is_dir():
                raise UsageError(f"no evidence archive at {root}")
        else:
            if not args.bundle.is_file():
                raise UsageError(f"no such bundle: {args.bundle}")
            root = unpack(args.bundle, Path(tmp))
            import json
            only = set(json.loads((root / "EXPORT.json").read_bytes())["segments"])
        trusted = trusted_key(config, root, args.public_key)
        tsa, tsa_state = tsa_trust(config, root)
        result: Result = verify(root, trusted.key, only, tsa)
        if trusted.problem is not None:
            result.findings.insert(0, trusted.problem)
        if args.store:
            check_open(root, trusted.key, result)
        if args.remote:
            result.findings += _verify_remote(config, root)
    record(settings, "evidence-verify", {
        "target": ("remote" if args.remote else "store") if args.store
        else str(args.bundle.resolve()), "ok": result.ok,
        "findings": len(result.findings), "segments": result.segments,
        "records": result.records, "signatures_checked": trusted.key is not None,
        "timestamps_checked": result.timestamps})
    for finding in result.findings:
        print(finding)
    state = "OK" if result.ok else f"{len(result.findings)} problems"
    print(f"{result.manifests} manifests, {result.segments} segments, {result.records} records, "
          f"{result.tombstoned} expired; {trusted.describe()}; {tsa_state}: {state}")
    return 0 if result.ok else 1


def _remote(config: EvidenceConfig, root: Path) -> "RemoteArchive":
    from sinks.evidence.remote import RemoteArchive

    if config.remote is None:
        raise UsageError("no `evidence.remote` section in the config: no remote copy to read")
    return RemoteArchive(config.remote, root)


def _verify_remote(config: EvidenceConfig, root: Path) -> list:
    from sinks.evidence.remote_check import verify_remote

    return verify_remote(_remote(config, root), config.legal_holds)


def run_restore(args: argparse.Namespace) -> int:
    from ctrail.audit.trail import record
    from ctrail.durable import lock_directory
    from sinks.evidence.remote_check import restore

    settings = settings_of(args)
    config = _config(settings)
    root = config.root(settings.data_dir)
    remote = _remote(config, root)
    lock = lock_directory(root, f"the evidence archive {root} is being written by another "
                                "process: stop it before restoring")
    try:
        restored, kept = restore(remote)
    finally:
        lock.close()
    record(settings, "evidence-restore", {"bucket": config.remote.bucket if config.remote
                                          else None, "restored": len(restored),
                                          "kept": len(kept)})
    print(f"restored {len(restored)} files from s3://{remote.config.bucket}/"
          f"{remote.config.prefix}; {len(kept)} already here were kept")
    args.store, args.remote, args.bundle = True, False, None
    return run_verify(args)


def run_expire(args: argparse.Namespace) -> int:
    from ctrail.audit.trail import record
    from sinks.evidence.retention import expire

    settings = settings_of(args)
    if settings.evidence is None:
        raise UsageError("no `evidence:` section in the config: nothing to expire")
    try:
        archive = EvidenceArchive.open_shared(settings.evidence, settings.data_dir)
    except Unavailable as exc:
        raise CtrailError(f"{exc}; the running pipeline expires on its own schedule") from None
    try:
        result = expire(archive)
    finally:
        archive.close()
    record(settings, "evidence-expire", {"deleted": result.deleted,
                                         "held": {str(k): v for k, v in result.held.items()}})
    print(f"expired {len(result.deleted)} segments; {len(result.held)} kept by legal holds")
    return 0
