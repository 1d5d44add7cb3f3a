"""``relance verify`` and ``relance checkpoint``: the log's hash chains, its projections and its signed checkpoints."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from services.cli.options import Commands, json_default, runs
from shared.config import ConfigurationError, Settings
from shared.runtime import migrated_engine

if TYPE_CHECKING:
    from shared.ledger.verify import CheckpointSources


def add_verify(commands: Commands) -> None:
    verify = commands.add_parser(
        "verify",
        help="check every hash chain, rebuild every projection and check the signed checkpoints; exit 1 on any "
        "difference",
    )
    verify.add_argument("--tenant", help="only this tenant's streams")
    verify.add_argument("--customer", help="only this customer's stream (with --tenant)")
    verify.add_argument(
        "--checkpoints",
        type=Path,
        metavar="FILE|DIR",
        help="exported checkpoints to check the log and the database's checkpoints against "
        "(default: RELANCE_CHECKPOINT_DIR)",
    )
    verify.add_argument(
        "--public-key",
        type=Path,
        metavar="FILE",
        help="public key of the checkpoint signatures (default: RELANCE_CHECKPOINT_PUBLIC_KEY_FILE)",
    )
    runs(verify, verify_ledger, database_url=True)


def add_checkpoint(commands: Commands) -> None:
    checkpoint = commands.add_parser("checkpoint", help="signed checkpoints that anchor the log outside the database")
    checkpoint_commands = checkpoint.add_subparsers(title="checkpoint commands", metavar="ACTION")
    keygen = checkpoint_commands.add_parser("keygen", help="make an Ed25519 key pair for signing checkpoints")
    keygen.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for checkpoint.key and .pub")
    runs(keygen, checkpoint_keygen)
    write = checkpoint_commands.add_parser(
        "write", help="sign and store a checkpoint of the log now, and export it (refused if history changed)"
    )
    write.add_argument(
        "--out",
        type=Path,
        metavar="FILE|DIR|-",
        help="also write it as JSON to this file or folder, or '-' for standard output "
        "(default: RELANCE_CHECKPOINT_DIR)",
    )
    write.add_argument(
        "--key-file", type=Path, metavar="FILE", help="private key (default: RELANCE_CHECKPOINT_KEY_FILE)"
    )
    write.add_argument(
        "--wait",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="PostgreSQL: how long to wait for transactions in flight to finish so the checkpoint covers every event "
        "committed before it (default 10)",
    )
    runs(write, checkpoint_write, database_url=True)
    export = checkpoint_commands.add_parser(
        "export", help="write the database's checkpoints that a folder does not hold yet into it, as JSON"
    )
    export.add_argument("--out", type=Path, metavar="DIR", help="the folder (default: RELANCE_CHECKPOINT_DIR)")
    runs(export, checkpoint_export, database_url=True)
    listing = checkpoint_commands.add_parser("list", help="the checkpoints the database holds")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    runs(listing, checkpoint_list, database_url=True)


def verify_ledger(args: argparse.Namespace, settings: Settings) -> int:
    from shared.ledger.verify import verify

    if args.customer and not args.tenant:
        print("relance: --customer needs --tenant (customer ids are per tenant)", file=sys.stderr)
        return 2
    sources = _checkpoint_sources(args.checkpoints, args.public_key, settings)
    progress = TerminalProgress("verify") if sys.stderr.isatty() else None
    engine = migrated_engine(settings)
    try:
        report = verify(engine, args.tenant, args.customer, sources=sources, progress=progress)
    finally:
        engine.dispose()
        if progress is not None:
            progress.clear()
    for problem in report.problems:
        print(f"PROBLEM  {problem}")
    for warning in report.warnings:
        print(f"WARNING  {warning}")
    for line in report.since:
        print(line)
    if report.checkpoints:
        how = "signatures checked" if sources.public_key is not None else "signatures NOT checked"
        print(f"{report.checkpoints} checkpoint(s) checked ({how})")
    verdict = "intact" if report.ok else f"{len(report.problems)} problem(s) found"
    print(f"{report.streams:,} stream(s), {report.events:,} event(s) checked: {verdict}")
    return 0 if report.ok else 1


class TerminalProgress:
    """How far a long pass over the log is (verify, replay), on one line of the terminal's stderr, at most four times
    a second."""

    def __init__(self, command: str) -> None:
        self.command = command
        self._shown = 0.0

    def __call__(self, phase: str, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self._shown < 0.25:
            return
        self._shown = now
        percent = 100 * done // total if total else 100
        line = f"{self.command}: {phase}, {done:,} of {total:,} events ({percent}%)"
        print(f"\r\033[K{line}", end="", file=sys.stderr, flush=True)

    def clear(self) -> None:
        if self._shown:
            print("\r\033[K", end="", file=sys.stderr, flush=True)


def _checkpoint_sources(exported: Path | None, public_key: Path | None, settings: Settings) -> CheckpointSources:
    """The exported checkpoints and the public key verify uses: the options', else the settings'."""
    from shared.ledger import checkpoints as cp
    from shared.ledger.verify import CheckpointSources

    folder = settings.checkpoint_dir
    if exported is not None:
        copies = cp.read_files(exported)
    elif folder is not None and folder.is_dir() and any(folder.glob("*.json")):
        copies = cp.read_files(folder)
    else:
        copies = []
    if public_key is not None:
        key = cp.load_public_key(public_key)
    elif settings.checkpoint_public_key_file is not None:
        key = cp.load_public_key(settings.checkpoint_public_key_file)
    elif settings.checkpoint_key_file is not None:
        key = cp.load_private_key(settings.checkpoint_key_file).public_key()
    else:
        key = None
    return CheckpointSources(exported=copies, public_key=key)


def checkpoint_keygen(args: argparse.Namespace, settings: Settings) -> int:
    from shared.ledger import checkpoints as cp

    private, public = cp.generate_keys(args.out)
    print(f"private key {private} (mode 0600): set RELANCE_CHECKPOINT_KEY_FILE={private} where checkpoints are")
    print("  written, and keep it off the database server and its backups")
    print(f"public key  {public} (key id {cp.key_id(cp.load_public_key(public))}): give it to whoever runs")
    print("  `relance verify` (--public-key or RELANCE_CHECKPOINT_PUBLIC_KEY_FILE)")
    return 0


def checkpoint_write(args: argparse.Namespace, settings: Settings) -> int:
    from shared.ledger import checkpoints as cp

    key_file = args.key_file or settings.checkpoint_key_file
    if key_file is None:
        raise ConfigurationError(
            "no checkpoint signing key: set RELANCE_CHECKPOINT_KEY_FILE or give --key-file "
            "(make a key pair with `relance checkpoint keygen --out DIR`)"
        )
    key = cp.load_private_key(key_file)
    target: Path | None = args.out or settings.checkpoint_dir
    to_stdout = target is not None and str(target) == "-"
    if target is not None and not to_stdout:
        _check_export_target(target)
    engine = migrated_engine(settings)
    try:
        checkpoint = cp.write(engine, key, settle_seconds=max(0.0, args.wait))
    except cp.CheckpointRefused as exc:
        print(f"relance: {exc}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    summary = (
        f"checkpoint {checkpoint.number}: {checkpoint.streams} stream(s), {checkpoint.events} event(s), "
        f"Merkle root {checkpoint.merkle_root[:16]}…, signed with key {checkpoint.key_id}"
    )
    if to_stdout:
        print(json.dumps(checkpoint.to_json(), indent=2, ensure_ascii=False))
        print(summary, file=sys.stderr)
        return 0
    if target is not None:
        summary += f", exported to {cp.export(checkpoint, target)}"
    print(summary)
    return 0


def _check_export_target(target: Path) -> None:
    """Refuse, before anything is signed, a place the checkpoint could not be exported to."""
    folder = target if target.is_dir() else target.parent
    if not target.is_dir() and target.exists():
        raise ConfigurationError(f"{target} exists already; an exported checkpoint is never overwritten")
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise ConfigurationError(f"cannot export checkpoints to {target}: {folder} is not a writable folder")


def checkpoint_export(args: argparse.Namespace, settings: Settings) -> int:
    from shared.ledger import checkpoints as cp

    folder: Path | None = args.out or settings.checkpoint_dir
    if folder is None:
        raise ConfigurationError("no folder to export to: give --out DIR or set RELANCE_CHECKPOINT_DIR")
    if not folder.is_dir():
        raise ConfigurationError(f"{folder} is not a folder")
    engine = migrated_engine(settings)
    try:
        with engine.connect() as conn:
            kept = cp.stored(conn)
    finally:
        engine.dispose()
    written = 0
    for checkpoint in kept:
        path = folder / cp.file_name(checkpoint)
        if path.exists():
            if cp.read_files(path)[0].to_json() != checkpoint.to_json():
                print(f"relance: {path} differs from checkpoint {checkpoint.number} in the database", file=sys.stderr)
                return 1
            continue
        cp.export(checkpoint, path)
        written += 1
    print(f"{written} checkpoint(s) exported to {folder}, {len(kept) - written} were there already")
    return 0


def checkpoint_list(args: argparse.Namespace, settings: Settings) -> int:
    from shared.ledger import checkpoints as cp

    engine = migrated_engine(settings)
    try:
        rows = cp.summaries(engine)
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps(rows, indent=2, default=json_default))
        return 0
    if not rows:
        print("no checkpoint yet: `relance checkpoint write` signs one")
        return 0
    for row in rows:
        print(
            f"{row['number']:>6}  {row['created_at']:%Y-%m-%d %H:%M:%S}  {row['streams']:>8} stream(s)  "
            f"{row['events']:>10} event(s)  root {row['merkle_root'][:16]}…  key {row['key_id']}"
        )
    return 0
