"""WS-Management (DSP0226) envelopes for the Windows Remote Shell (MS-WSMV): parsing requests and
building responses and faults the way a Windows WinRM service words them."""

from __future__ import annotations

import base64
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "x": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
    "w": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "p": "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "f": "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault",
}

ACTION_CREATE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create"
ACTION_DELETE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete"
ACTION_COMMAND = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Command"
ACTION_SEND = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Send"
ACTION_RECEIVE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Receive"
ACTION_SIGNAL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Signal"
ACTION_FAULT = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"

RESOURCE_CMD = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd"
STATE_DONE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done"
STATE_RUNNING = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Running"
SIGNAL_TERMINATE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/terminate"
SIGNAL_CTRL_C = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/ctrl_c"
ANONYMOUS = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"


@dataclass
class Request:
    """One parsed WS-Man request."""

    action: str
    message_id: str
    resource_uri: str
    selectors: dict[str, str]
    operation_timeout: float
    body: ET.Element
    options: dict[str, str] = field(default_factory=dict)


class WsmanFault(Exception):
    """A WS-Man fault: SOAP code, WS-Man subcode, Windows error code and message."""

    def __init__(self, subcode: str, code: int, message: str, soap_code: str = "s:Receiver"):
        super().__init__(message)
        self.subcode = subcode
        self.code = code
        self.message = message
        self.soap_code = soap_code


def timed_out() -> WsmanFault:
    return WsmanFault(
        "w:TimedOut",
        2150858793,
        "The WS-Management service cannot complete the operation within the time specified in "
        "OperationTimeout.  ",
    )


def quota_limit(max_shells: int) -> WsmanFault:
    return WsmanFault(
        "w:QuotaLimit",
        2150859174,
        "The WS-Management service cannot process the request. This user is allowed a maximum "
        f"number of {max_shells} concurrent shells, which has been exceeded. Close existing "
        "shells or raise the quota for this user.  ",
    )


def shell_not_found(shell_id: str) -> WsmanFault:
    return WsmanFault(
        "w:InvalidSelectors",
        2150858843,
        f"The request for the Windows Remote Shell with ShellId {shell_id} failed because the "
        "shell was not found on the server. Possible causes are: the specified ShellId is "
        "incorrect or the shell no longer exists on the server. Provide the correct ShellId or "
        "create a new shell and retry the operation. ",
        "s:Sender",
    )


def parse_duration(text: str | None, default: float) -> float:
    """Parses an xs:duration such as PT60S or PT20.000S."""
    if not text or not text.startswith("PT") or not text.endswith("S"):
        return default
    try:
        return float(text[2:-1])
    except ValueError:
        return default


def parse_request(xml: bytes) -> Request:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        raise WsmanFault(
            "w:SchemaValidationError",
            2150858817,
            f"The SOAP XML in the message does not match the corresponding XML schema "
            f"definition: {e}",
            "s:Sender",
        ) from e
    header = root.find("s:Header", NS)
    body = root.find("s:Body", NS)
    if header is None or body is None:
        raise WsmanFault(
            "w:SchemaValidationError", 2150858817, "The envelope lacks a Header or Body.", "s:Sender"
        )

    def text(path: str) -> str:
        node = header.find(path, NS)
        return (node.text or "").strip() if node is not None else ""

    selectors = {
        s.get("Name", ""): (s.text or "").strip()
        for s in header.findall("w:SelectorSet/w:Selector", NS)
    }
    options = {
        o.get("Name", ""): (o.text or "").strip() for o in header.findall("w:OptionSet/w:Option", NS)
    }
    return Request(
        action=text("a:Action"),
        message_id=text("a:MessageID"),
        resource_uri=text("w:ResourceURI"),
        selectors=selectors,
        operation_timeout=parse_duration(text("w:OperationTimeout"), 60.0),
        body=body,
        options=options,
    )


def _envelope(action: str, relates_to: str, body: str) -> bytes:
    return (
        '<s:Envelope xml:lang="en-US" '
        f'xmlns:s="{NS["s"]}" xmlns:a="{NS["a"]}" xmlns:x="{NS["x"]}" xmlns:w="{NS["w"]}" '
        f'xmlns:rsp="{NS["rsp"]}" xmlns:p="{NS["p"]}">'
        "<s:Header>"
        f"<a:Action>{escape(action)}</a:Action>"
        f"<a:MessageID>uuid:{str(uuid.uuid4()).upper()}</a:MessageID>"
        f"<a:To>{ANONYMOUS}</a:To>"
        f"<a:RelatesTo>{escape(relates_to)}</a:RelatesTo>"
        "</s:Header>"
        f"<s:Body>{body}</s:Body></s:Envelope>"
    ).encode("utf-8")


def response(req: Request, body: str) -> bytes:
    return _envelope(req.action + "Response", req.message_id, body)


def fault(req: Request | None, f: WsmanFault, machine: str) -> bytes:
    relates = req.message_id if req else ""
    body = (
        "<s:Fault>"
        f"<s:Code><s:Value>{f.soap_code}</s:Value>"
        f"<s:Subcode><s:Value>{f.subcode}</s:Value></s:Subcode></s:Code>"
        f'<s:Reason><s:Text xml:lang="en-US">{escape(f.message)}</s:Text></s:Reason>'
        "<s:Detail>"
        f'<f:WSManFault xmlns:f="{NS["f"]}" Code="{f.code}" Machine="{escape(machine)}">'
        f"<f:Message>{escape(f.message)}</f:Message></f:WSManFault>"
        "</s:Detail></s:Fault>"
    )
    return _envelope(ACTION_FAULT, relates, body)


def shell_created(req: Request, endpoint: str, shell_id: str, owner: str, client_ip: str) -> bytes:
    body = (
        "<x:ResourceCreated>"
        f"<a:Address>{escape(endpoint)}</a:Address>"
        "<a:ReferenceParameters>"
        f"<w:ResourceURI>{RESOURCE_CMD}</w:ResourceURI>"
        f'<w:SelectorSet><w:Selector Name="ShellId">{shell_id}</w:Selector></w:SelectorSet>'
        "</a:ReferenceParameters>"
        "</x:ResourceCreated>"
        "<rsp:Shell>"
        f"<rsp:ShellId>{shell_id}</rsp:ShellId>"
        f"<rsp:ResourceUri>{RESOURCE_CMD}</rsp:ResourceUri>"
        f"<rsp:Owner>{escape(owner)}</rsp:Owner>"
        f"<rsp:ClientIP>{escape(client_ip)}</rsp:ClientIP>"
        "<rsp:IdleTimeOut>PT7200.000S</rsp:IdleTimeOut>"
        "<rsp:InputStreams>stdin</rsp:InputStreams>"
        "<rsp:OutputStreams>stdout stderr</rsp:OutputStreams>"
        "<rsp:ShellRunTime>P0DT0H0M0S</rsp:ShellRunTime>"
        "<rsp:ShellInactivity>P0DT0H0M0S</rsp:ShellInactivity>"
        "</rsp:Shell>"
    )
    return response(req, body)


def command_started(req: Request, command_id: str) -> bytes:
    return response(
        req, f"<rsp:CommandResponse><rsp:CommandId>{command_id}</rsp:CommandId></rsp:CommandResponse>"
    )


def received(
    req: Request,
    command_id: str,
    chunks: list[tuple[str, bytes]],
    ended: bool,
    exit_code: int | None,
) -> bytes:
    parts = []
    for stream, data in chunks:
        parts.append(
            f'<rsp:Stream Name="{stream}" CommandId="{command_id}">'
            f"{base64.b64encode(data).decode()}</rsp:Stream>"
        )
    if ended:
        parts.append(f'<rsp:Stream Name="stdout" CommandId="{command_id}" End="true"></rsp:Stream>')
        parts.append(f'<rsp:Stream Name="stderr" CommandId="{command_id}" End="true"></rsp:Stream>')
        parts.append(
            f'<rsp:CommandState CommandId="{command_id}" State="{STATE_DONE}">'
            f"<rsp:ExitCode>{exit_code if exit_code is not None else 0}</rsp:ExitCode>"
            "</rsp:CommandState>"
        )
    else:
        parts.append(f'<rsp:CommandState CommandId="{command_id}" State="{STATE_RUNNING}"/>')
    return response(req, "<rsp:ReceiveResponse>" + "".join(parts) + "</rsp:ReceiveResponse>")
