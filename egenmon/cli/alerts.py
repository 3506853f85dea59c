"""Commands of the alerts part: `plan set|show`, `alerts run-once`, `webhook add|list|disable`."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import secrets
import uuid

from egenmon.alerts import engine, monitoring, notify
from egenmon.cli.common import CommandError, command, db, emit
from egenmon.settings import Settings
from egenmon.store import patients, plans, webhooks
from egenmon.store.db import make_pool


def register(sub: argparse._SubParsersAction) -> None:
    pl = sub.add_parser("plan", help="monitoring plans").add_subparsers(
        dest="action", required=True
    )
    p = command(pl, "set", cmd_plan_set, "set a patient's monitoring plan")
    p.add_argument("--patient", required=True, type=_uuid, help="patient id")
    p.add_argument(
        "--protocol", required=True, help="hypertension, heart_failure, copd, diabetes or general"
    )
    p.add_argument(
        "--threshold",
        action="append",
        default=[],
        metavar="TYPE:LOW:HIGH",
        help="an individual range, e.g. systolic:90:150 or body_weight::95 (repeatable)",
    )
    p.add_argument(
        "--scale2",
        action="store_true",
        help="NEWS2 SpO2 scale 2 (hypercapnic respiratory failure; target 88-92%%)",
    )
    p.add_argument("--spo2-target", metavar="LOW:HIGH", help="SpO2 target range in %%")
    p.add_argument(
        "--news2-freshness-hours",
        type=float,
        metavar="H",
        help="NEWS2 scores values measured in the last H hours (1-24, default 24)",
    )
    p.add_argument(
        "--instruction",
        action="append",
        default=[],
        metavar="TYPE:TEXT",
        help="what the patient should do when a TYPE value crosses a limit (repeatable)",
    )
    p.add_argument("--set-by", help="who sets the plan (default: the operating-system user)")
    p = command(pl, "show", cmd_plan_show, "show a patient's monitoring plan")
    p.add_argument("--patient", required=True, type=_uuid)

    al = sub.add_parser("alerts", help="alerts").add_subparsers(dest="action", required=True)
    p = command(
        al,
        "run-once",
        cmd_run_once,
        "run one scheduler cycle of every rule now; print what changed",
    )
    p.add_argument(
        "--workers", type=int, help="evaluating processes (default: by the number of patients)"
    )
    p.add_argument(
        "--deliver", action="store_true", help="also send the webhook deliveries that are due"
    )

    wh = sub.add_parser("webhook", help="webhooks").add_subparsers(dest="action", required=True)
    p = command(wh, "add", cmd_webhook_add, "subscribe a URL to alert events")
    p.add_argument("--url", required=True)
    p.add_argument(
        "--secret",
        help="HMAC key (default: EGENMON_WEBHOOK_SECRET if set, "
        "else a new random one, printed once)",
    )
    p.add_argument("--description")
    command(wh, "list", cmd_webhook_list, "list webhooks")
    p = command(wh, "disable", cmd_webhook_disable, "stop sending to a webhook")
    p.add_argument("webhook_id", type=_uuid)


def _uuid(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an id: {text!r}") from None


def _operator(args: argparse.Namespace) -> str:
    return getattr(args, "set_by", None) or f"cli:{getpass.getuser()}"


def cmd_plan_set(args: argparse.Namespace, settings: Settings) -> None:
    target = None
    if args.spo2_target:
        lo, sep, hi = args.spo2_target.partition(":")
        try:
            target = (float(lo), float(hi))
        except ValueError:
            raise CommandError(f"--spo2-target {args.spo2_target!r} is not LOW:HIGH") from None
        if not sep:
            raise CommandError(f"--spo2-target {args.spo2_target!r} is not LOW:HIGH")
    try:
        plan = monitoring.make_plan(
            args.protocol,
            args.threshold,
            news2_scale2=args.scale2,
            spo2_target=target,
            news2_freshness_hours=args.news2_freshness_hours,
            instructions=args.instruction,
        )
        with db(settings) as conn:
            shown = monitoring.set_plan(conn, args.patient, plan, _operator(args))
    except monitoring.PlanError as e:
        raise CommandError(str(e)) from None
    emit(args, shown, f"plan version {shown['version']} set: {shown['protocol']}")


def cmd_plan_show(args: argparse.Namespace, settings: Settings) -> None:
    with db(settings) as conn:
        if not patients.patient_exists(conn, args.patient):
            raise CommandError(f"unknown patient {args.patient}")
        shown = monitoring.view(args.patient, plans.get_plan(conn, args.patient))
    emit(args, shown)


def cmd_run_once(args: argparse.Namespace, settings: Settings) -> None:
    # No leader lock needed: reconciliation is serialised in the database and idempotent,
    # so a manual cycle next to the leader's cannot open a second alert for a deviation.
    url = settings.require_database()
    result = engine.run_cycle(url, tz=settings.tz, workers=args.workers)
    out = result.as_dict()
    if args.deliver:
        out["deliveries"] = asyncio.run(_deliver(settings)).as_dict()
    lines = [
        f"{len(result.opened)} opened, {len(result.updated)} updated, "
        f"{len(result.escalated)} escalated, {len(result.cleared)} cleared "
        f"({result.patients} patients, {result.readings_in_window} readings, "
        f"{result.seconds:.2f} s)"
    ]
    for kind, rows in (
        ("opened", result.opened),
        ("escalated", result.escalated),
        ("updated", result.updated),
    ):
        lines += [
            f"{kind} {r['id']} {r['rule']} {r['severity']} patient {r['patient_id']}" for r in rows
        ]
    emit(args, out, "\n".join(lines))


async def _deliver(settings: Settings) -> notify.DeliveryReport:
    pool = make_pool(settings.require_database(), 1, 2)
    await pool.open(wait=True, timeout=30)
    try:
        return await notify.deliver_due(
            pool,
            default_secret=settings.webhook_secret,
            base_backoff_s=settings.scheduler_interval_s,
        )
    finally:
        await pool.close()


def cmd_webhook_add(args: argparse.Namespace, settings: Settings) -> None:
    if not args.url.startswith(("http://", "https://")):
        raise CommandError(f"--url {args.url!r} must start with http:// or https://")
    secret, shown = args.secret, None
    if secret is None and not settings.webhook_secret:
        secret = shown = secrets.token_urlsafe(32)
    with db(settings) as conn:
        row = webhooks.add_webhook(conn, args.url, secret, args.description, _operator(args))
    out = {"id": str(row["id"]), "url": row["url"], "active": row["active"]}
    if shown:
        out["secret"] = shown
    text = f"webhook {row['id']} -> {row['url']}"
    if shown:
        text += f"\nsecret {shown}  (shown once only)"
    emit(args, out, text)


def cmd_webhook_list(args: argparse.Namespace, settings: Settings) -> None:
    with db(settings) as conn:
        rows = webhooks.list_webhooks(conn)
    hooks = [
        {
            "id": str(r["id"]),
            "url": r["url"],
            "active": r["active"],
            "description": r["description"],
            "has_secret": r["has_secret"],
        }
        for r in rows
    ]
    emit(
        args,
        {"webhooks": hooks},
        "\n".join(f"{h['id']} {'active' if h['active'] else 'disabled'} {h['url']}" for h in hooks)
        or "no webhooks",
    )


def cmd_webhook_disable(args: argparse.Namespace, settings: Settings) -> None:
    with db(settings) as conn:
        if not webhooks.set_webhook_active(conn, args.webhook_id, False):
            raise CommandError(f"unknown webhook {args.webhook_id}")
    emit(args, {"id": str(args.webhook_id), "active": False}, "disabled")
