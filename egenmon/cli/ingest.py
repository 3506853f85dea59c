"""Commands of ingest: `quarantine list` and `quarantine replay ID...`."""

from __future__ import annotations

import argparse
import asyncio

import psycopg

from egenmon import progress
from egenmon.cli.common import CommandError, command, emit
from egenmon.fhir.ingest import replay_quarantined
from egenmon.ingest import quarantine as q
from egenmon.ingest.normalise import SOURCES
from egenmon.ingest.pipeline import Pipeline
from egenmon.settings import Settings
from egenmon.store.db import make_pool


def register(sub: argparse._SubParsersAction) -> None:
    qu = sub.add_parser("quarantine", help="rejected bodies and readings").add_subparsers(
        dest="action", required=True
    )
    p = command(qu, "list", cmd_list, "list what was rejected, with reasons (newest first)")
    p.add_argument("--all", action="store_true", help="resolved entries too")
    p.add_argument("--device", help="only this device's entries")
    p.add_argument("--source", choices=sorted(SOURCES))
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--full", action="store_true", help="whole raw bodies, not a preview")
    p = command(
        qu,
        "replay",
        cmd_replay,
        "run entries through the pipeline again and resolve what is stored now",
    )
    p.add_argument("ids", nargs="+", type=int, metavar="ID")


def _run(coro):
    try:
        return asyncio.run(coro)
    except (psycopg.OperationalError, OSError) as e:
        raise CommandError(f"database: {str(e).strip().splitlines()[0]}") from None


async def _with_pipeline(settings: Settings, work):
    pool = make_pool(settings.require_database(), 1, 4)
    await pool.open(wait=True, timeout=10)
    pipeline = Pipeline(settings, pool)
    try:
        await pipeline.start()
        try:
            return await work(pipeline)
        finally:
            await pipeline.stop()
    finally:
        await pool.close()


def cmd_list(args: argparse.Namespace, settings: Settings) -> None:
    async def work() -> list[dict]:
        async with await psycopg.AsyncConnection.connect(
            settings.require_database(), autocommit=True
        ) as conn:
            return await q.list_entries(
                conn,
                include_resolved=args.all,
                device_id=args.device,
                source=args.source,
                limit=args.limit,
            )

    entries = [q.entry_json(e, full=args.full) for e in _run(work())]
    lines = [
        f"#{e['id']} {e['received_at'][:19]} {e['source']} {e['device_id'] or '-'} "
        f"{e['kind']}{'' if e['reading_index'] is None else '[' + str(e['reading_index']) + ']'}"
        f" {'resolved' if e['resolved_at'] else 'open'}: {e['reason']}"
        for e in entries
    ]
    emit(args, {"entries": entries}, "\n".join(lines) if lines else "quarantine is empty")


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    async def work(pipeline: Pipeline) -> list[q.Replayed]:
        if not progress.wanted(args.json):
            return await q.replay(pipeline, args.ids, fhir=replay_quarantined)
        # One entry at a time, so a bar can follow a long replay on a terminal.
        out: list[q.Replayed] = []
        with progress.bar(len(args.ids), "replay", unit="entry") as shown:
            for entry_id in args.ids:
                out += await q.replay(pipeline, [entry_id], fhir=replay_quarantined)
                shown.update(1)
        return out

    results = _run(_with_pipeline(settings, work))
    out = [r.json() for r in results]
    emit(
        args,
        {"replayed": out},
        "\n".join(
            f"#{r['id']} {'resolved' if r['resolved'] else 'open'}: {r['note']}" for r in out
        ),
    )
    return 0 if all(r.resolved for r in results) else 1
