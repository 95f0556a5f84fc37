"""The local stage: `make dev` / `python -m chalicelib.local` / `chalice local`.

Serves the same Chalice app with chalice's own local server, an embedded SQLite store and
the in-process trigger, so scheduled tasks fire for real with no AWS account.
`--with-moto` runs the DynamoDB adapter instead, against an in-process moto server.
"""
import argparse
import logging
import os
import re
import secrets
import signal
import sys
import threading
from typing import Callable, Optional, Tuple
from urllib.parse import unquote

from chalicelib import config, observability
from chalicelib.errors import LocalSetupError

logger = logging.getLogger("task_scheduler.local")

_started = False
_start_lock = threading.Lock()
# main() prints the banner itself once it knows the port it got (PORT=0 picks one).
_banner_waits_for_port = False
_banner_parts: Optional[Tuple[str, str]] = None
_exchangers = None  # the ExchangeProcesses the server hands its exchanges over to
# A generated token is at least this long; one written by hand must not be a guess away.
MIN_TOKEN_LENGTH = 8
_TOKEN = re.compile(r"[!-~]+", re.ASCII)  # printable ASCII, no spaces


def _kept(name: str, make: Callable[[], str], check: Callable[[str], None]) -> str:
    """A value generated once and kept beside the local data (token, secret, instance id),
    checked with `check` when read back. An empty file is made again, with a warning: an
    emptied secret must not turn signing off."""
    path = config.sqlite_path().parent / name
    if path.exists():
        try:
            text = path.read_bytes().decode("utf-8").strip()
        except UnicodeDecodeError:
            raise LocalSetupError(f"{path} is not UTF-8 text; fix it, or delete it to have "
                                  "a new one made") from None
        if text:
            check(text)
            path.chmod(0o600)  # one made by an earlier version may be world-readable
            return text
        print(f"task-scheduler: {path} was empty; made a new {name}", file=sys.stderr)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    value = make()
    check(value)
    # Created 0600, never world-readable for a moment; an emptied one is tightened too.
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
        file.write(value + "\n")
    path.chmod(0o600)
    return value


def _check_token(text: str) -> None:
    if not _TOKEN.fullmatch(text) or "," in text or len(text) < MIN_TOKEN_LENGTH:
        raise LocalSetupError(
            f"{config.sqlite_path().parent / 'api-token'} must hold one token: at least "
            f"{MIN_TOKEN_LENGTH} printable ASCII characters, no spaces or commas (to have "
            "several, set API_TOKENS); fix it, or delete it to have a new one made")


def _check_secret(text: str) -> None:
    from chalicelib.signing import parse_secrets

    try:
        parse_secrets(text)
    except ValueError as error:
        raise LocalSetupError(f"{config.sqlite_path().parent / 'webhook-secret'}: {error}; "
                              "fix it, or delete it to have a new one made") from None


def _check_instance(text: str) -> None:
    if not re.fullmatch(r"[0-9a-f]{8}", text):
        raise LocalSetupError(f"{config.sqlite_path().parent / 'instance-id'} must hold 8 "
                              "hex digits; delete it to have a new one made")


def local_token() -> tuple:
    """(token, where it came from): API_TOKENS, or one generated once and kept with the
    local data so the curl you copied keeps working after a restart."""
    given = config.api_tokens()
    if given:
        # The first entry's token: an entry may name its tenant (tenant=token).
        first = given.split(",")[0].strip()
        return first.partition("=")[2].strip() if "=" in first else first, "API_TOKENS"
    token = _kept("api-token", lambda: secrets.token_urlsafe(24), _check_token)
    os.environ[config.API_TOKENS] = token
    return token, f"generated, kept in {config.sqlite_path().parent / 'api-token'}"


def banner(token: str, source: str, port: int) -> str:
    """What a person needs to try the server: URL, token, a curl of the SPEC example."""
    url = f"http://127.0.0.1:{port}"
    store = config.task_store()
    where = config.sqlite_path() if store == "sqlite" else \
        f"DynamoDB table {config.tasks_table()} at {config.endpoint_url() or 'AWS'}"
    return f"""
task-scheduler (local stage) on {url}
  token : {token}   ({source})
  webhook signing secret: {config.webhook_signing_secret() or config.webhook_signing_secret_param()}
  store : {store}: {where}
  trigger: in-process, due tasks fire by themselves

Try it: start a receiver in another terminal,
  python3 scripts/receiver.py 9000
then schedule a webhook ten seconds from now:
  curl -s -X POST {url}/schedule-task \\
    -H "Authorization: Bearer {token}" -H "Content-Type: application/json" \\
    -d '{{"action": "webhook", "payload": {{"url": "http://127.0.0.1:9000/hook", "data": {{"msg": "Hello from Lambda"}}}}, "run_at": "'$(date -u -d '+10 seconds' +%Y-%m-%dT%H:%M:%SZ)'"}}'
  (macOS: date -u -v+10S +%Y-%m-%dT%H:%M:%SZ)
"""


def start_if_local() -> None:
    """Start the in-process trigger when this process serves the local stage.

    app.py calls this at import: `chalice local` offers no start-up hook. In Lambda and
    under the test client (any stage but local) it does nothing."""
    global _started
    if config.trigger_backend() != "local" or config.in_lambda():
        return
    with _start_lock:
        if _started:
            return
        _started = True
    observability.configure_local_logging()
    try:
        _start_local()
    except LocalSetupError as error:
        if _banner_waits_for_port:
            raise  # main() says it and exits 2
        print(f"task-scheduler: {error}", file=sys.stderr)  # chalice local
        raise SystemExit(2) from None


def _start_local() -> None:
    # Imported here, not at the top: every Lambda imports this module (app.py calls
    # start_if_local) and needs none of them.
    from chalicelib import wiring
    from chalicelib.local.dispatcher import start_dispatcher
    from chalicelib.signing import new_secret

    global _banner_parts
    token, source = local_token()
    if not config.webhook_signing_secret() and not config.webhook_signing_secret_param():
        os.environ[config.WEBHOOK_SIGNING_SECRET] = _kept("webhook-secret", new_secret,
                                                          _check_secret)
    if _banner_waits_for_port:
        _banner_parts = (token, source)
    else:  # chalice local: its --port is on its command line
        print_banner(token, source, _serving_port())
    # Runs of this data folder's server carry its id, so a restart recovers exactly the
    # runs its previous life left behind, and not those of anything else on the store.
    instance = _kept("instance-id", lambda: secrets.token_hex(4), _check_instance)
    _start_exchange_processes()
    dispatcher = start_dispatcher(wiring.runtime(), config.local_workers(),
                                  run_prefix=f"local-{instance}-")
    if _exchangers is not None:
        _exchangers.hand_over_from(dispatcher.runs_in_flight)


def _start_exchange_processes() -> None:
    global _exchangers
    count = config.local_exchange_processes()
    if count <= 0:
        return
    from chalicelib.local.exchangers import ExchangeProcesses

    processes = ExchangeProcesses(count, config.local_workers())
    try:
        processes.start()
    except OSError as error:  # e.g. a socket path too long for a deep TMPDIR
        logger.warning("webhooks are sent from the server: no exchange process (%s)", error)
        return
    # Not closed at exit: a run still in flight would be cut off and recorded as failed.
    # The children end when this process does (their stdin closes).
    _exchangers = processes


def print_banner(token: str, source: str, port: int) -> None:
    """The banner, for the person at the terminal: on stderr, as stdout is JSON lines."""
    print(banner(token, source, port), file=sys.stderr, flush=True)


def _serving_port() -> int:
    # `chalice local --port N` tells only its own command line.
    argv = sys.argv
    if "--port" in argv[:-1]:
        value = argv[argv.index("--port") + 1]
        if value.isascii() and value.isdigit():
            return int(value)
    return config.port()


def _start_moto() -> None:
    """An in-process moto server with the stage's table, for the DynamoDB adapter."""
    from moto.server import ThreadedMotoServer

    from chalicelib import bootstrap

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    os.environ[config.AWS_ENDPOINT_URL] = f"http://{host}:{port}"
    for key, value in (("AWS_ACCESS_KEY_ID", "local"), ("AWS_SECRET_ACCESS_KEY", "local"),
                       ("AWS_DEFAULT_REGION", "us-east-1")):
        os.environ.setdefault(key, value)
    os.environ[config.TASK_STORE] = "dynamodb"
    print(bootstrap.ensure_table(), "(moto server at", config.endpoint_url() + ")",
          file=sys.stderr)


def _server_class():
    from chalice.local import ThreadedHTTPServer

    class Server(ThreadedHTTPServer):
        """chalice's server with a listen backlog for bursts: the default 5 made 50 clients
        wait ~1 s in SYN retransmits (the POST p99 was all connection set-up)."""

        request_queue_size = 1024

    return Server


def _request_handler():
    # Imported here: chalice.local is not in the Lambda package (only chalice/app.py is),
    # and app.py imports this module.
    from chalice.local import ChaliceRequestHandler

    class _RequestHandler(ChaliceRequestHandler):
        """http.server answers a method it has no do_X for with a 501 HTML page; API Gateway
        answers it like any request it has no route for, and so does this handler."""

        # Headers and body go out in two writes: with Nagle on, a keep-alive client's
        # delayed ACK held every response ~40 ms (bench/api_load.py: 44 ms p50, one client).
        disable_nagle_algorithm = True

        def _send_http_response_with_body(self, code, headers, body):
            # chalice's handler writes a HEAD answer's body too, which a keep-alive client
            # would read as the start of the next response.
            if self.command == "HEAD":
                self.send_response(code)
                self.send_header("Content-Type", headers.pop("Content-Type", "application/json"))
                self._send_headers(headers)
                return
            super()._send_http_response_with_body(code, headers, body)

        def log_request(self, code="-", size="-"):
            # One JSON line per request, like every other line of the server.
            observability.event("http_request", method=self.command,
                                path=(self.path or "").split("?", 1)[0],
                                status=int(code) if isinstance(code, int) else str(code))

        def log_message(self, format, *args):  # noqa: A002 - http.server's own signature
            logger.warning({"event": "http_server", "message": format % args})

        def __getattr__(self, name):
            if name.startswith("do_"):
                return self._generic_handle
            raise AttributeError(name)

        def _generic_handle(self):
            # API Gateway hands a route its path parameters URL-decoded; chalice's local
            # router passes them as sent ("a%20b" for the flow key "a b"): decode them,
            # once per gateway (one gateway serves every request of a keep-alive
            # connection).
            matcher = self.local_gateway.event_converter._route_matcher
            if not getattr(matcher, "decodes_parameters", False):
                match = matcher.match_route

                def decoded(url):
                    found = match(url)
                    return found._replace(captured={name: unquote(value) for name, value
                                                    in found.captured.items()})

                matcher.match_route = decoded
                matcher.decodes_parameters = True
            super()._generic_handle()

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = \
            _generic_handle

    return _RequestHandler


def main(argv=None) -> int:
    """Serve the local stage until SIGINT / SIGTERM, then shut down cleanly."""
    parser = argparse.ArgumentParser(prog="python -m chalicelib.local",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=None, help="default: PORT or 8000")
    parser.add_argument("--with-moto", action="store_true",
                        help="use the DynamoDB adapter against an in-process moto server")
    args = parser.parse_args(argv)
    observability.configure_local_logging()
    os.environ[config.STAGE] = config.LOCAL_STAGE
    if args.port is not None:
        os.environ[config.PORT] = str(args.port)
    if args.with_moto:
        _start_moto()

    from chalice.cli.factory import CLIFactory
    from chalice.local import LocalDevServer

    from chalicelib.local.dispatcher import stop_dispatcher

    global _banner_waits_for_port
    _banner_waits_for_port = True
    factory = CLIFactory(str(config.PROJECT_DIR), environ=os.environ)
    stage_config = factory.create_config_obj(chalice_stage_name=config.LOCAL_STAGE)
    try:
        app = stage_config.chalice_app  # importing app.py starts the trigger
    except LocalSetupError as error:
        print(f"task-scheduler: {error}", file=sys.stderr)
        return 2
    server = LocalDevServer(app, stage_config, args.host, config.port(),
                            handler_cls=_request_handler(), server_cls=_server_class())
    port = server.server.server_address[1]
    if _banner_parts:
        print_banner(*_banner_parts, port)

    def shut_down(signum, _frame):
        logger.info("received %s, shutting down", signal.Signals(signum).name)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shut_down)
    signal.signal(signal.SIGINT, shut_down)
    # LocalDevServer.serve_forever would print a plain-text line on stdout first.
    observability.event("serving", url=f"http://{args.host}:{port}")
    server.server.serve_forever()
    finished = stop_dispatcher(timeout=10.0)
    if finished and _exchangers is not None:
        _exchangers.close()
    logger.info("stopped%s", "" if finished else
                " (runs still in flight are recovered at the next start)")
    sys.stdout.flush()
    # Worker threads still inside a webhook call must not hold the exit: their tasks
    # stay claimed in the store and are recovered at the next start.
    os._exit(0)
