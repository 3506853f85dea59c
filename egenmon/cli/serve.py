"""`egenmon serve`: the production process, HTTP and/or background roles."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

import uvicorn
import uvloop

from egenmon.alerts.stream import close_streams
from egenmon.app import Roles, check_database, create_app
from egenmon.cli.common import CommandError, command
from egenmon.settings import Settings
from egenmon.store.db import DatabaseError


def register(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "serve", cmd_serve, "run the platform process", json_flag=False)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--no-http", action="store_true", help="no HTTP API (a consumer process)")
    p.add_argument("--no-mqtt", action="store_true", help="no MQTT consumer")
    p.add_argument("--no-scheduler", action="store_true", help="no rule scheduler")


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def cmd_serve(args: argparse.Namespace, settings: Settings) -> None:
    configure_logging(settings)
    try:
        check_database(settings)
    except DatabaseError as e:
        raise CommandError(str(e)) from None
    roles = Roles(http=not args.no_http, mqtt=not args.no_mqtt, scheduler=not args.no_scheduler)
    app = create_app(settings, roles)
    if roles.http:
        config = uvicorn.Config(
            app,
            host=args.host,
            port=args.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            loop="uvloop",
            http="httptools",
            timeout_graceful_shutdown=10,
        )
        Server(config).run()
    else:
        # The same loop as with HTTP (uvicorn's loop="uvloop"): a consumer-only process
        # runs what an all-roles process runs, and the benchmarks measure it.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(run_without_http(app))


class Server(uvicorn.Server):
    """uvicorn's server, ending the open event streams when told to stop (they would
    otherwise hold the graceful shutdown for its whole timeout)."""

    def handle_exit(self, sig: int, frame: object) -> None:
        close_streams()
        super().handle_exit(sig, frame)  # type: ignore[arg-type]


async def run_without_http(app) -> None:
    """Run the app's lifespan (its background services) until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with app.router.lifespan_context(app):
        await stop.wait()
