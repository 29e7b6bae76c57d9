"""The WinRM listener: HTTP with NTLM (sealed) or Basic authentication, the Windows Remote Shell
(Create, Command, Send, Receive, Signal, Delete), and a small JSON control API for tests."""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import struct
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import spnego

from . import wsman
from .hyperv import HyperVHost
from .scripts import ScriptRunner, ScriptRejected

RECEIVE_CHUNK = 2048  # bytes of one stream per Receive response, so output comes in several chunks
BOUNDARY = b"--Encrypted Boundary"


@dataclass
class Command:
    id: str
    argv: list[str]
    stdin: bytearray = field(default_factory=bytearray)
    stdin_done: threading.Event = field(default_factory=threading.Event)
    out: list[tuple[str, bytes]] = field(default_factory=list)
    exit_code: int | None = None
    done: threading.Event = field(default_factory=threading.Event)
    terminated: threading.Event = field(default_factory=threading.Event)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def write(self, stream: str, data: bytes) -> None:
        with self.changed:
            self.out.append((stream, data))
            self.changed.notify_all()

    def finish(self, code: int) -> None:
        with self.changed:
            if self.exit_code is None:
                self.exit_code = code
            self.done.set()
            self.changed.notify_all()


@dataclass
class Shell:
    id: str
    owner: str
    commands: dict[str, Command] = field(default_factory=dict)


class Listener:
    """One WinRM host: its listener settings, shells, Hyper-V model, faults and records."""

    def __init__(
        self,
        name: str,
        users: dict[str, str],
        hyperv: HyperVHost,
        runner: ScriptRunner,
        max_shells_per_user: int = 5,
        allow_unencrypted: bool = False,
        basic: bool = True,
    ):
        self.name = name
        self.users = users
        self.hyperv = hyperv
        self.runner = runner
        self.max_shells_per_user = max_shells_per_user
        self.allow_unencrypted = allow_unencrypted
        self.basic = basic
        self.lock = threading.Lock()
        self.shells: dict[str, Shell] = {}
        self.max_concurrent_shells = 0
        self.requests = 0
        self.auth_failures = 0
        self.principals: set[str] = set()
        self.faults: dict[str, Any] = {}
        self.port = 0
        self.scheme = "http"
        # HTTP.sys binds an NTLM handshake to its connection. With ntlm_binding "any", an
        # Authenticate message may finish a handshake begun on another connection (winrm-rs 1.1
        # re-authenticates every HTTPS request, and its pool may switch connections mid-handshake).
        self.ntlm_binding = "connection"
        self.pending: list[Any] = []
        self.cross_connection = 0

    # -- NTLM handshakes waiting for their Authenticate message --------------------------------
    def add_pending(self, ctx: Any) -> None:
        with self.lock:
            self.pending.append(ctx)
            del self.pending[:-32]

    def drop_pending(self, ctx: Any) -> None:
        with self.lock:
            if ctx in self.pending:
                self.pending.remove(ctx)

    def adopt_pending(self, token: bytes) -> Any:
        """Finds the handshake (begun on another connection) this Authenticate message answers.
        A refused Authenticate message leaves an NTLM acceptor unchanged, so trying is safe."""
        with self.lock:
            candidates = list(reversed(self.pending))
        if os.environ.get("HCP_TESTHOST_DEBUG"):
            print(f"adopt: {len(candidates)} candidates", file=sys.stderr, flush=True)
        for ctx in candidates:
            try:
                out = ctx.step(token)
            except (spnego.exceptions.SpnegoError, ValueError) as e:
                if os.environ.get("HCP_TESTHOST_DEBUG"):
                    print(f"adopt: {len(candidates)} candidates, refused: {e}", file=sys.stderr, flush=True)
                continue
            if ctx.complete:
                self.drop_pending(ctx)
                with self.lock:
                    self.cross_connection += 1
                ctx._hcp_adopted = True
                ctx._hcp_out = out
                return ctx
        return None

    # -- faults -------------------------------------------------------------------------------
    def take_fault(self, key: str) -> bool:
        with self.lock:
            n = self.faults.get(key, 0)
            if n:
                self.faults[key] = n - 1
                return True
            return False

    # -- shells -------------------------------------------------------------------------------
    def create_shell(self, owner: str) -> Shell:
        with self.lock:
            mine = sum(1 for s in self.shells.values() if s.owner == owner)
            if mine >= self.max_shells_per_user or self.faults.get("quota_limit", 0):
                if self.faults.get("quota_limit", 0):
                    self.faults["quota_limit"] -= 1
                raise wsman.quota_limit(self.max_shells_per_user)
            shell = Shell(id=str(uuid.uuid4()).upper(), owner=owner)
            self.shells[shell.id] = shell
            self.max_concurrent_shells = max(self.max_concurrent_shells, len(self.shells))
            return shell

    def shell(self, req: wsman.Request) -> Shell:
        sid = req.selectors.get("ShellId", "")
        with self.lock:
            shell = self.shells.get(sid)
        if shell is None:
            raise wsman.shell_not_found(sid)
        return shell

    def delete_shell(self, shell: Shell) -> None:
        for cmd in shell.commands.values():
            if not cmd.done.is_set():
                cmd.terminated.set()
                cmd.stdin_done.set()
                self.runner.note_terminated(self.name, cmd.id)
                cmd.finish(-1073741510)  # STATUS_CONTROL_C_EXIT, as a killed process reports
        with self.lock:
            self.shells.pop(shell.id, None)

    def status(self) -> dict[str, Any]:
        with self.lock:
            return {
                "name": self.name,
                "port": self.port,
                "open_shells": len(self.shells),
                "max_concurrent_shells": self.max_concurrent_shells,
                "requests": self.requests,
                "auth_failures": self.auth_failures,
                "principals": sorted(self.principals),
                "ntlm_binding": self.ntlm_binding,
                "ntlm_cross_connection": self.cross_connection,
                "faults": dict(self.faults),
            }


def split_command_line(command: str, args: list[str]) -> list[str]:
    """Splits the WinRS command line: cmd.exe joins Command and Arguments into one line (pywinrm
    sends all arguments as one string, winrm-rs one element each)."""
    return " ".join([command, *args]).split()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Microsoft-HTTPAPI/2.0"
    listener: Listener

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if os.environ.get("HCP_TESTHOST_DEBUG"):
            super().log_message(format, *args)

    # NTLM authenticates a connection; this handler object lives as long as the connection.
    def setup(self) -> None:
        super().setup()
        self.ctx: Any = None
        self.ctx_user: str | None = None
        self.ctx_scheme = "Negotiate"

    def send_body(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def unauthorized(self, token: bytes | None = None) -> None:
        self.send_response(401)
        if token is not None:
            self.send_header("WWW-Authenticate", f"{self.ctx_scheme} {base64.b64encode(token).decode()}")
        else:
            self.send_header("WWW-Authenticate", "Negotiate")
            self.send_header("WWW-Authenticate", "NTLM")
            if self.listener.basic:
                self.send_header("WWW-Authenticate", 'Basic realm="WSMAN"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        # WinRM answers GET on /wsman with 405, as Windows does.
        self.send_body(405, b"", "text/plain")

    # -- WinRM ----------------------------------------------------------------------------------
    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path.split("?")[0].lower() != "/wsman":
            self.send_body(404, b"", "text/plain")
            return
        lst = self.listener
        with lst.lock:
            lst.requests += 1
        if lst.take_fault("drop_connection"):
            self.close_connection = True
            self.connection.close()
            return
        auth = self.headers.get("Authorization", "")
        if os.environ.get("HCP_TESTHOST_DEBUG"):
            print(f"conn {self.client_address[1]} ctx={self.ctx is not None} auth={auth[:20]!r} len={len(raw)} ct={self.headers.get('Content-Type')}", file=sys.stderr, flush=True)
        user: str | None = None
        sealed_ok = False
        first_authenticated = False
        if auth.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(auth[6:])
                try:
                    text = decoded.decode("utf-8")
                except UnicodeDecodeError:
                    text = decoded.decode("latin-1")  # what requests sends for non-ASCII
                name, _, pw = text.partition(":")
            except ValueError:
                name, pw = "", ""
            if not lst.basic or lst.users.get(name.split("\\")[-1]) != pw or not pw:
                with lst.lock:
                    lst.auth_failures += 1
                self.ctx = None
                self.unauthorized()
                return
            user = name
        elif auth.lower().startswith(("negotiate ", "ntlm ")):
            scheme, _, token_b64 = auth.partition(" ")
            self.ctx_scheme = scheme
            token = base64.b64decode(token_b64.strip())
            starts = token[:1] == b"\x60" or (token[:8] == b"NTLMSSP\x00" and token[8:12] == b"\x01\x00\x00\x00")
            if self.ctx is None or self.ctx.complete or starts:
                self.ctx = spnego.server(protocol="negotiate")
                self.ctx_user = None
            if not starts and lst.ntlm_binding == "any":
                adopted = lst.adopt_pending(token)
                if adopted is not None:
                    self.ctx = adopted
            try:
                if getattr(self.ctx, "_hcp_adopted", False):
                    out = self.ctx._hcp_out
                else:
                    out = self.ctx.step(token)
                    if not self.ctx.complete:
                        self.ctx._hcp_challenged = True
                        lst.add_pending(self.ctx)
                    else:
                        lst.drop_pending(self.ctx)
            except (spnego.exceptions.SpnegoError, ValueError, AttributeError):
                # AttributeError: pyspnego 0.12 reads the flags of a Kerberos context whose
                # acceptance failed (a skewed clock, a replayed ticket): a refusal all the same.
                lst.drop_pending(self.ctx)
                # A wrong password, or an NTLM Authenticate message on a connection that never
                # received the challenge: HTTP.sys ties NTLM to the connection and refuses both.
                with lst.lock:
                    lst.auth_failures += 1
                self.ctx = None
                self.unauthorized()
                return
            if not self.ctx.complete:
                self.unauthorized(out)
                self.rfile.read(0)
                return
            self.ctx_user = str(self.ctx.client_principal or "")
            user = self.ctx_user
            with lst.lock:
                lst.principals.add(f"{self.ctx.negotiated_protocol}:{user}")
            first_authenticated = True
            self.final_token = out
            if not raw:
                # pywinrm and pypsrp authenticate with an empty body before sealing.
                extra = {}
                if out:
                    extra["WWW-Authenticate"] = f"{scheme} {base64.b64encode(out).decode()}"
                self.send_body(200, b"", "application/soap+xml;charset=UTF-8", extra)
                return
        elif self.ctx is not None and self.ctx.complete:
            user = self.ctx_user
        else:
            self.unauthorized()
            return

        content_type = self.headers.get("Content-Type", "")
        seal = False
        if "multipart/encrypted" in content_type:
            if self.ctx is None or not self.ctx.complete:
                self.unauthorized()
                return
            try:
                raw = self.unseal(raw)
            except Exception:  # noqa: BLE001 - any decryption failure means a broken session
                self.ctx = None
                self.unauthorized()
                return
            seal = True
            sealed_ok = True
        elif (lst.scheme == "http" and self.ctx is not None and self.ctx.complete
              and not first_authenticated and not lst.allow_unencrypted):
            # Windows refuses unencrypted bodies unless AllowUnencrypted is set.
            self.reply(None, wsman.WsmanFault(
                "w:AccessDenied", 5, "Access is denied.", "s:Sender"), False)
            return
        del sealed_ok
        self.handle_wsman(raw, user or "", seal)

    def unseal(self, raw: bytes) -> bytes:
        # Windows bounds the sealed data by OriginalContent's Length, so it accepts the closing
        # boundary with or without a CRLF before it (pywinrm and pypsrp send none, winrm-rs one).
        length = int(re.search(rb"Length=(\d+)", raw).group(1))
        marker = b"application/octet-stream\r\n"
        start = raw.index(marker) + len(marker)
        (sig_len,) = struct.unpack("<I", raw[start:start + 4])
        header = raw[start + 4:start + 4 + sig_len]
        data = raw[start + 4 + sig_len:start + 4 + sig_len + length]
        return self.ctx.unwrap_winrm(header, data)

    def seal(self, body: bytes) -> tuple[bytes, str]:
        header, data, _pad = self.ctx.wrap_winrm(body)
        out = (
            BOUNDARY + b"\r\n"
            b"\tContent-Type: application/HTTP-SPNEGO-session-encrypted\r\n"
            b"\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=" + str(len(body)).encode() + b"\r\n"
            + BOUNDARY + b"\r\n"
            b"\tContent-Type: application/octet-stream\r\n"
            + struct.pack("<I", len(header)) + header + data
            # As Windows does: the closing boundary follows the sealed data directly.
            + BOUNDARY + b"--\r\n"
        )
        ct = 'multipart/encrypted;protocol="application/HTTP-SPNEGO-session-encrypted";boundary="Encrypted Boundary"'
        return out, ct

    def reply(self, req: wsman.Request | None, result: bytes | wsman.WsmanFault, seal: bool) -> None:
        status = 200
        if isinstance(result, wsman.WsmanFault):
            status = 500
            result = wsman.fault(req, result, self.listener.name)
        extra = {}
        token = getattr(self, "final_token", None)
        if token:
            extra["WWW-Authenticate"] = f"{self.ctx_scheme} {base64.b64encode(token).decode()}"
            self.final_token = None
        if seal:
            body, ct = self.seal(result)
            self.send_body(status, body, ct, extra)
        else:
            self.send_body(status, result, "application/soap+xml;charset=UTF-8", extra)

    def handle_wsman(self, raw: bytes, user: str, seal: bool) -> None:
        req = None
        try:
            req = wsman.parse_request(raw)
            result = self.dispatch(req, user)
        except wsman.WsmanFault as f:
            self.reply(req, f, seal)
            return
        self.reply(req, result, seal)

    def dispatch(self, req: wsman.Request, user: str) -> bytes:
        lst = self.listener
        if req.action == wsman.ACTION_CREATE:
            shell = lst.create_shell(user)
            host = self.headers.get("Host", "127.0.0.1")
            return wsman.shell_created(req, f"{lst.scheme}://{host}/wsman", shell.id, user, self.client_address[0])
        if req.action == wsman.ACTION_DELETE:
            lst.delete_shell(lst.shell(req))
            return wsman.response(req, "")
        if req.action == wsman.ACTION_COMMAND:
            shell = lst.shell(req)
            line = req.body.find("rsp:CommandLine", wsman.NS)
            if line is None:
                raise wsman.WsmanFault("w:SchemaValidationError", 2150858817, "CommandLine is missing.", "s:Sender")
            command = (line.findtext("rsp:Command", "", wsman.NS) or "").strip().strip('"')
            args = [(a.text or "") for a in line.findall("rsp:Arguments", wsman.NS)]
            cid = line.get("CommandId") or str(uuid.uuid4()).upper()
            cmd = Command(id=cid, argv=split_command_line(command, args))
            shell.commands[cid] = cmd
            threading.Thread(target=self.run_command, args=(cmd,), daemon=True).start()
            return wsman.command_started(req, cid)
        if req.action == wsman.ACTION_SEND:
            shell = lst.shell(req)
            for stream in req.body.findall("rsp:Send/rsp:Stream", wsman.NS):
                cmd = shell.commands.get(stream.get("CommandId", ""))
                if cmd is None:
                    raise wsman.WsmanFault("w:InvalidSelectors", 2150858843, "The command was not found.", "s:Sender")
                if stream.text:
                    cmd.stdin.extend(base64.b64decode(stream.text))
                if (stream.get("End") or "").lower() == "true":
                    cmd.stdin_done.set()
            return wsman.response(req, "<rsp:SendResponse/>")
        if req.action == wsman.ACTION_SIGNAL:
            shell = lst.shell(req)
            sig = req.body.find("rsp:Signal", wsman.NS)
            cid = sig.get("CommandId", "") if sig is not None else ""
            code = (sig.findtext("rsp:Code", "", wsman.NS) if sig is not None else "").strip()
            cmd = shell.commands.get(cid)
            if cmd is not None and code in (wsman.SIGNAL_TERMINATE, wsman.SIGNAL_CTRL_C):
                if not cmd.done.is_set():
                    cmd.terminated.set()
                    cmd.stdin_done.set()
                    lst.runner.note_terminated(lst.name, cmd.id)
                    cmd.finish(-1073741510)
            return wsman.response(req, "<rsp:SignalResponse/>")
        if req.action == wsman.ACTION_RECEIVE:
            shell = lst.shell(req)
            ds = req.body.find("rsp:Receive/rsp:DesiredStream", wsman.NS)
            cid = ds.get("CommandId", "") if ds is not None else ""
            cmd = shell.commands.get(cid)
            if cmd is None:
                raise wsman.WsmanFault("w:InvalidSelectors", 2150858843, "The command was not found.", "s:Sender")
            deadline = time.monotonic() + min(req.operation_timeout, 60.0)
            with cmd.changed:
                while not cmd.out and not cmd.done.is_set():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise wsman.timed_out()
                    cmd.changed.wait(left)
                chunks: list[tuple[str, bytes]] = []
                budget = {"stdout": RECEIVE_CHUNK, "stderr": RECEIVE_CHUNK}
                while cmd.out:
                    stream, data = cmd.out[0]
                    room = budget[stream]
                    if room <= 0:
                        break
                    take, rest = data[:room], data[room:]
                    chunks.append((stream, take))
                    budget[stream] -= len(take)
                    if rest:
                        cmd.out[0] = (stream, rest)
                        break
                    cmd.out.pop(0)
                ended = cmd.done.is_set() and not cmd.out
            return wsman.received(req, cid, chunks, ended, cmd.exit_code if ended else None)
        raise wsman.WsmanFault(
            "w:ActionNotSupported", 2150858754,
            f"The WS-Management service cannot process a {req.action} request.", "s:Sender")

    def run_command(self, cmd: Command) -> None:
        lst = self.listener
        try:
            code = lst.runner.run(lst.name, lst.hyperv, cmd)
        except ScriptRejected as e:
            cmd.write("stderr", f"#< CLIXML\r\n{e}".encode())
            code = 1
        except Exception as e:  # noqa: BLE001 - a bug in the model must still end the command
            cmd.write("stderr", f"test host internal error: {type(e).__name__}: {e}".encode())
            code = 1
        cmd.finish(code)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def start_listener(listener: Listener, port: int = 0, host: str = "127.0.0.1", tls: Any = None) -> Server:
    handler = type("BoundHandler", (Handler,), {"listener": listener})
    srv = Server((host, port), handler)
    if tls is not None:
        srv.socket = tls.wrap_socket(srv.socket, server_side=True)
    listener.scheme = "https" if tls is not None else "http"
    listener.port = srv.server_address[1]
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def write_ntlm_user_file(users: dict[str, str]) -> str:
    """pyspnego's NTLM acceptor reads credentials from the file NTLM_USER_FILE names."""
    fd, path = tempfile.mkstemp(prefix="hcp-winrm-users-")
    with os.fdopen(fd, "w") as f:
        for user, pw in users.items():
            f.write(f":{user}:{pw}\n")
            f.write(f"HCP:{user}:{pw}\n")
            f.write(f"WORKGROUP:{user}:{pw}\n")
    os.environ["NTLM_USER_FILE"] = path
    return path


COMMAND_RE = re.compile(r"^-(e|ec|en|enc|enco|encod|encode|encoded|encodedc|encodedco|encodedcom|encodedcomm|encodedcomma|encodedcomman|encodedcommand)$", re.I)


class ControlHandler(BaseHTTPRequestHandler):
    """The tests' side door (plain HTTP on its own port, never part of WinRM): status, records,
    model state, fault injection, failover and guest behaviour, per host:
    `/hcp-testhost/<host>/<status|records|state|faults|failover|vm|power|guest|guest_kvp|
    checkpoint_type|checkpoint>`."""

    protocol_version = "HTTP/1.1"
    listeners: dict[str, Listener]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self.control("GET", None)

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        length = int(self.headers.get("Content-Length") or 0)
        self.control("POST", json.loads(self.rfile.read(length) or b"null"))

    def send_json(self, status: int, out: Any) -> None:
        body = json.dumps(out).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def control(self, method: str, payload: Any) -> None:
        parts = self.path.strip("/").split("/")
        if len(parts) != 3 or parts[0] != "hcp-testhost" or parts[1] not in self.listeners:
            self.send_json(404, {"error": f"unknown path {self.path}"})
            return
        lst, path = self.listeners[parts[1]], parts[2]
        try:
            if path == "status":
                out: Any = lst.status()
            elif path == "records":
                out = lst.runner.records_for(lst.name)
            elif path == "state":
                out = lst.hyperv.snapshot()
            elif path == "faults" and method == "POST":
                with lst.lock:
                    lst.faults.update({k: v for k, v in payload.items() if k in ("quota_limit", "drop_connection")})
                lst.runner.set_faults(lst.name, payload)
                out = {"ok": True}
            elif path == "failover" and method == "POST":
                lst.hyperv.move_vm_owner(payload["vm_id"], payload["node"])
                out = {"ok": True}
            elif path == "vm" and method == "POST":
                out = lst.hyperv.seed_vm(payload)
            elif path == "power" and method == "POST":
                lst.hyperv.set_state(payload["vm_id"], payload["state"])
                out = {"ok": True}
            elif path == "guest_kvp" and method == "POST":
                lst.hyperv.set_guest_kvp(payload["vm_id"], payload["key"], payload["value"])
                out = {"ok": True}
            elif path == "guest" and method == "POST":
                lst.hyperv.set_guest(payload["vm_id"], payload["guest"])
                out = {"ok": True}
            elif path == "checkpoint_type" and method == "POST":
                lst.hyperv.set_checkpoint_type(payload["vm_id"], payload["type"])
                out = {"ok": True}
            elif path == "checkpoint" and method == "POST":
                out = lst.hyperv.seed_checkpoint(payload["vm_id"], payload["name"], payload.get("snapshot_type", "Standard"))
            else:
                self.send_json(404, {"error": f"unknown operation {method} {path}"})
                return
        except (KeyError, TypeError) as e:
            self.send_json(400, {"error": f"bad request: {e}"})
            return
        self.send_json(200, out)


def start_control(listeners: list[Listener], port: int = 0) -> Server:
    handler = type("BoundControl", (ControlHandler,), {"listeners": {l.name: l for l in listeners}})
    srv = Server(("127.0.0.1", port), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv
