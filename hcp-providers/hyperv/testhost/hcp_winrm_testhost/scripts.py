"""Recognises HCP's scripts in the `-EncodedCommand` text, binds the parameter document the way
PowerShell binds a script's `param` block, and runs the script's semantics on the Hyper-V model.

The test host runs no PowerShell. Every command must be `powershell.exe -EncodedCommand <text>`
where `<text>` is HCP's wrapper (`scripts/_wrapper.ps1`) around either the path of a deployed
script (`<ScriptDir>\\<version>\\New-HcpVm.ps1` runs `HyperVHost.new_hcp_vm`) or one of the
deploy scripts (`scripts/deploy/*.ps1`, run by `deploy_*` below). Anything else is refused. The
parameter document arrives on stdin; the test host records it, and checks that no user data
(VM names, notes, tags, user-data) ever appears in script text."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable

from .hyperv import HyperVHost, PsError, norm

PLACEHOLDER = "$HcpScript = '{{SCRIPT}}'"
USER_KEYS = ("Name", "Notes", "UserData", "Unattend", "Kvp", "CheckpointName", "Image")
ENCODED = re.compile(r"^-(e|ec|enc\w*)$", re.I)


class ScriptRejected(Exception):
    """The command is not one of HCP's scripts."""


def scripts_dir() -> Path:
    env = os.environ.get("HCP_HYPERV_SCRIPTS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "scripts"


def method_name(script: str) -> str:
    """`New-HcpVm` → `new_hcp_vm`."""
    verb, _, noun = script.partition("-")
    return (verb + "_" + re.sub(r"(?<!^)([A-Z])", r"_\1", noun)).lower()


class ParamSpec:
    """A script's `param` block: names, types, Mandatory and Validate* attributes."""

    DECL = re.compile(r"((?:\[[^\[\]]*(?:\[[^\[\]]*\][^\[\]]*)*\]\s*)*)\$(\w+)")

    def __init__(self, text: str):
        self.params: dict[str, dict[str, Any]] = {}
        start = text.find("param(")
        if start < 0:
            return
        depth, i = 0, start + len("param")
        body_start = i + 1
        while i < len(text):
            if text[i] == "(":
                depth += 1
            elif text[i] == ")":
                depth -= 1
                if depth == 0:
                    break
            i += 1
        block = text[body_start:i]
        # Drop defaults and comments so only declarations remain.
        block = re.sub(r"#[^\n]*", "", block)
        for chunk in self._split(block):
            m = self.DECL.search(chunk)
            if not m:
                continue
            attrs, name = m.group(1), m.group(2)
            spec: dict[str, Any] = {"mandatory": "Mandatory" in attrs, "type": "object"}
            for t in re.findall(r"\[(\w+(?:\[\])?)\]", attrs):
                if t.lower() in ("string", "int", "int64", "long", "bool", "switch", "hashtable", "string[]", "object"):
                    spec["type"] = t.lower()
            if r := re.search(r"ValidateRange\((-?\d+),\s*(-?\d+)\)", attrs):
                spec["range"] = (int(r.group(1)), int(r.group(2)))
            if r := re.search(r"ValidateLength\((\d+),\s*(\d+)\)", attrs):
                spec["length"] = (int(r.group(1)), int(r.group(2)))
            if r := re.search(r"ValidatePattern\('((?:[^']|'')*)'\)", attrs):
                spec["pattern"] = r.group(1).replace("''", "'")
            if r := re.search(r"ValidateSet\(([^)]*)\)", attrs):
                spec["set"] = [s.strip().strip("'") for s in r.group(1).split(",")]
            self.params[name] = spec

    @staticmethod
    def _split(block: str) -> list[str]:
        out, depth, cur = [], 0, ""
        for ch in block:
            if ch in "([":
                depth += 1
            elif ch in ")]":
                depth -= 1
            if ch == "," and depth == 0:
                out.append(cur)
                cur = ""
            else:
                cur += ch
        out.append(cur)
        return out

    def bind(self, script: str, doc: dict[str, Any]) -> dict[str, Any]:
        for key in doc:
            if key not in self.params:
                raise PsError("InvalidArgument", f"A parameter cannot be found that matches parameter name '{key}'.", script, f"NamedParameterNotFound,{script}.ps1")
        missing = [n for n, s in self.params.items() if s["mandatory"] and doc.get(n) in (None, "")]
        if missing:
            raise PsError("InvalidArgument", f"Cannot process command because of one or more missing mandatory parameters: {' '.join(missing)}.", script, f"MissingMandatoryParameter,{script}.ps1")
        bound = {}
        for name, spec in self.params.items():
            if name not in doc or doc[name] is None:
                bound[name] = None
                continue
            v = doc[name]
            t = spec["type"]
            ok = {
                "string": isinstance(v, str),
                "int": isinstance(v, int) and not isinstance(v, bool),
                "long": isinstance(v, int) and not isinstance(v, bool),
                "int64": isinstance(v, int) and not isinstance(v, bool),
                "bool": isinstance(v, bool),
                "switch": isinstance(v, bool),
                "hashtable": isinstance(v, dict),
                "string[]": isinstance(v, list) and all(isinstance(x, str) for x in v),
            }.get(t, True)
            if not ok:
                raise PsError("InvalidArgument", f"Cannot process argument transformation on parameter '{name}'. Cannot convert value to type {t}.", script, f"ParameterArgumentTransformationError,{script}.ps1")
            if "range" in spec and not spec["range"][0] <= v <= spec["range"][1]:
                lo, hi = spec["range"]
                raise PsError("InvalidArgument", f"Cannot validate argument on parameter '{name}'. The {v} argument is {'less than the minimum' if v < lo else 'greater than the maximum'} allowed range of {lo if v < lo else hi}. Supply an argument that is {'greater than or equal to ' + str(lo) if v < lo else 'less than or equal to ' + str(hi)} and then try the command again.", script, f"ParameterArgumentValidationError,{script}.ps1")
            if "length" in spec and not spec["length"][0] <= len(v) <= spec["length"][1]:
                raise PsError("InvalidArgument", f"Cannot validate argument on parameter '{name}'. The character length of the {len(v)} argument is outside the allowed range {spec['length'][0]}..{spec['length'][1]}.", script, f"ParameterArgumentValidationError,{script}.ps1")
            if "pattern" in spec and not re.search(spec["pattern"], v, re.I):
                raise PsError("InvalidArgument", f"Cannot validate argument on parameter '{name}'. The argument does not match the \"{spec['pattern']}\" pattern. Supply an argument that matches \"{spec['pattern']}\" and try the command again.", script, f"ParameterArgumentValidationError,{script}.ps1")
            if "set" in spec and v not in spec["set"]:
                raise PsError("InvalidArgument", f"Cannot validate argument on parameter '{name}'. The argument \"{v}\" does not belong to the set \"{','.join(spec['set'])}\" specified by the ValidateSet attribute. Supply an argument that is in the set and then try the command again.", script, f"ParameterArgumentValidationError,{script}.ps1")
            bound[name] = v
        return bound


def text_of_hook(hv: HyperVHost, text: str, runner: "ScriptRunner") -> str:
    """The deployed content of the hook the wrapper `text` names."""
    middle = text[len(runner.prefix): len(text) - len(runner.suffix)]
    path = re.fullmatch(r"\$HcpScript = '([^'\r\n]+)'", middle).group(1)  # type: ignore[union-attr]
    with hv.fs_lock:
        return hv.fs[norm(path)].decode("utf-8-sig")


class ScriptRunner:
    """Shared by every listener of one process; keeps records per host."""

    def __init__(self, directory: Path | None = None):
        self.dir = directory or scripts_dir()
        wrapper = (self.dir / "_wrapper.ps1").read_text(encoding="utf-8")
        if PLACEHOLDER not in wrapper:
            raise RuntimeError(f"{self.dir / '_wrapper.ps1'} lacks the line {PLACEHOLDER}")
        self.prefix, self.suffix = wrapper.split(PLACEHOLDER, 1)
        self.deploy = {p.stem: p.read_text(encoding="utf-8") for p in sorted((self.dir / "deploy").glob("*.ps1"))}
        self.shipped = {p.stem: p.read_text(encoding="utf-8") for p in sorted(self.dir.glob("*.ps1")) if not p.name.startswith("_")}
        self.specs = {n: ParamSpec(t) for n, t in {**self.shipped, **self.deploy}.items()}
        self.lock = threading.Lock()
        self.records: dict[str, list[dict[str, Any]]] = {}
        self.texts: set[str] = set()
        self.user_values: set[str] = set()
        self.violations: list[str] = []
        self.faults: dict[str, dict[str, Any]] = {}
        self.running: dict[str, dict[str, Any]] = {}

    # -- records and faults -----------------------------------------------------------------------
    def records_for(self, host: str) -> dict[str, Any]:
        with self.lock:
            return {"records": list(self.records.get(host, [])), "violations": list(self.violations)}

    def set_faults(self, host: str, faults: dict[str, Any]) -> None:
        with self.lock:
            self.faults.setdefault(host, {}).update(faults)

    def take_fault(self, host: str, key: str) -> Any:
        with self.lock:
            f = self.faults.get(host, {})
            v = f.get(key)
            if isinstance(v, int) and not isinstance(v, bool):
                if v <= 0:
                    return None
                f[key] = v - 1
                return True
            if v is not None:
                f.pop(key, None)
            return v

    def note_terminated(self, host: str, command_id: str) -> None:
        with self.lock:
            rec = self.running.get(command_id)
            if rec is not None:
                rec["terminated"] = True

    def _check_user_data(self, text: str | None, doc: dict[str, Any] | None) -> None:
        values: list[str] = []

        def walk(v: Any) -> None:
            if isinstance(v, str) and len(v) >= 4:
                values.append(v)
            elif isinstance(v, dict):
                for x in v.values():
                    walk(x)
            elif isinstance(v, list):
                for x in v:
                    walk(x)

        for key in USER_KEYS:
            if doc and key in doc:
                walk(doc[key])
        with self.lock:
            if text is not None:
                self.texts.add(text)
                for v in self.user_values:
                    if v in text:
                        self.violations.append(f"script text contains user data {v[:40]!r}")
            for v in values:
                self.user_values.add(v)
                for t in self.texts:
                    if v in t:
                        self.violations.append(f"script text contains user data {v[:40]!r}")

    # -- recognition ------------------------------------------------------------------------------
    def identify(self, hv: HyperVHost, text: str) -> tuple[str, str, str | None]:
        """Returns (kind, script name, deployed version) or raises ScriptRejected."""
        if not (text.startswith(self.prefix) and text.endswith(self.suffix)):
            raise ScriptRejected("the test host refuses this script: it is not HCP's wrapper")
        middle = text[len(self.prefix): len(text) - len(self.suffix)]
        m = re.fullmatch(r"\$HcpScript = '([^'\r\n]+)'", middle)
        if m:
            path = m.group(1)
            parts = path.split("\\")
            if len(parts) < 3 or not parts[-1].endswith(".ps1"):
                raise ScriptRejected(f"the test host refuses script path {path!r}")
            name = parts[-1][:-4]
            with hv.fs_lock:
                content = hv.fs.get(norm(path))
            if content is None:
                raise ScriptRejected(f"The term '{path}' is not recognized as the name of a cmdlet, function, script file, or operable program.")
            if len(parts) >= 4 and parts[-2].lower() == "hooks":
                # A site's hook (or replacement create script), deployed with HCP's scripts.
                return "hook", name, parts[-3]
            if name not in self.shipped or not hasattr(hv, method_name(name)):
                raise ScriptRejected(f"the test host does not know script {name!r}")
            return "script", name, parts[-2]
        for name, body in self.deploy.items():
            if middle == "$HcpScript = {\n" + body + "\n}":
                return "deploy", name, None
        raise ScriptRejected("the test host refuses this script: unknown script body")

    # -- execution --------------------------------------------------------------------------------
    def run(self, host: str, hv: HyperVHost, cmd: Any) -> int:
        argv = cmd.argv
        if not argv or argv[0].lower() not in ("powershell", "powershell.exe"):
            cmd.write("stderr", f"'{argv[0] if argv else ''}' is not recognized as an internal or external command,\r\noperable program or batch file.\r\n".encode())
            return 1
        encoded = None
        for i, a in enumerate(argv[1:-1], start=1):
            if ENCODED.match(a):
                encoded = argv[i + 1]
        if encoded is None:
            raise ScriptRejected("the test host runs only -EncodedCommand scripts")
        text = base64.b64decode(encoded).decode("utf-16-le")
        record: dict[str, Any] = {"time": time.time(), "script_sha256": hashlib.sha256(text.encode()).hexdigest(), "terminated": False}
        with self.lock:
            self.records.setdefault(host, []).append(record)
            self.running[cmd.id] = record
        try:
            kind, name, version = self.identify(hv, text)
        except ScriptRejected:
            record["kind"] = "rejected"
            self._check_user_data(text, None)
            raise
        record.update(kind=kind, script=name, version=version)
        self._check_user_data(text, None)
        if not cmd.stdin_done.wait(timeout=120):
            raise ScriptRejected("no parameter document arrived on stdin")
        if cmd.terminated.is_set():
            return -1073741510
        try:
            doc = json.loads(base64.b64decode(bytes(cmd.stdin).strip()).decode("utf-8"))
        except ValueError as e:
            return self.fail(cmd, PsError("InvalidData", f"Exception calling \"FromBase64String\" with \"1\" argument(s): \"{e}\"", "ConvertFrom-Json"))
        record["params"] = doc
        self._check_user_data(None, doc)
        if self.take_fault(host, f"hang:{name}"):
            record["hung"] = True
            cmd.terminated.wait(timeout=600)
            return -1073741510
        injected = self.take_fault(host, f"error:{name}")
        if injected:
            return self.fail(cmd, PsError(injected.get("Category", "NotSpecified"), injected.get("Message", "injected"), injected.get("Cmdlet", name)))

        def progress(percent: int, message: str) -> None:
            line = json.dumps({"percent": percent, "message": message}, separators=(",", ":"))
            cmd.write("stderr", f"##hcp-progress {line}\r\n".encode())

        if kind == "hook":
            return self.run_hook(host, hv, cmd, name, text_of_hook(hv, text, self), doc, record)
        try:
            params = self.specs[name].bind(name, doc if isinstance(doc, dict) else {})
            if kind == "deploy":
                result = getattr(self, "deploy_" + method_name(name))(host, hv, params)
            else:
                result = getattr(hv, method_name(name))(params, progress)
        except PsError as e:
            return self.fail(cmd, e)
        if cmd.terminated.is_set():
            return -1073741510
        out = json.dumps({"ok": True, "result": result}, separators=(",", ":"), ensure_ascii=False)
        data = out.encode("utf-8")
        for i in range(0, len(data), 1500):
            cmd.write("stdout", data[i:i + 1500])
        record["exit_code"] = 0
        return 0

    # -- the site's hooks --------------------------------------------------------------------------
    def hook_effect(self, host: str, name: str) -> dict[str, Any]:
        """The effect the tests declared for hook `name` (control API: faults `hook:<name>`)."""
        with self.lock:
            return dict(self.faults.get(host, {}).get(f"hook:{name}") or {})

    def run_hook(self, host: str, hv: HyperVHost, cmd: Any, name: str, content: str,
                 doc: Any, record: dict[str, Any]) -> int:
        """Runs a hook as PowerShell would bind it, then carries out its declared effect: log
        lines, a hang, a failure, KVP items set on the VM, a VM created (replacement create
        scripts) and the result it returns."""
        record["kind"] = "hook"
        try:
            params = ParamSpec(content).bind(name, doc if isinstance(doc, dict) else {})
        except PsError as e:
            return self.fail(cmd, e)
        hcp = params.get("Hcp") or {}
        effect = self.hook_effect(host, name)
        for line in effect.get("log", []):
            out = json.dumps({"level": "info", "message": line}, separators=(",", ":"))
            cmd.write("stderr", f"##hcp-log {out}\r\n".encode())
        for line in effect.get("stderr", []):
            cmd.write("stderr", f"{line}\r\n".encode())
        if effect.get("hang"):
            record["hung"] = True
            cmd.terminated.wait(timeout=600)
            return -1073741510
        if "error" in effect:
            err = effect["error"]
            return self.fail(cmd, PsError(err.get("Category", "NotSpecified"), err.get("Message", "hook failed"), name, f"{name}.ps1"))
        result: Any = effect.get("result")
        try:
            if effect.get("create"):
                new_params = {k: v for k, v in hcp.items() if k in self.specs["New-HcpVm"].params}
                created = hv.new_hcp_vm(self.specs["New-HcpVm"].bind("New-HcpVm", new_params), lambda p, m: None)
                if effect.get("skip_mark"):
                    with hv.store.lock:
                        hv.store.vms[created["Id"].lower()].notes = ""
                result = {"Id": created["Id"], "State": created["State"], "MarkWritten": True}
                result.update(effect.get("result") or {})
            kvp = effect.get("kvp")
            if kvp:
                with hv.store.lock:
                    vm = hv.store.vms.get(str(hcp.get("NativeId") or "").lower())
                    if vm is None:
                        raise PsError("ObjectNotFound", f"Hyper-V was unable to find a virtual machine with id \"{hcp.get('NativeId')}\".", "Get-VM")
                    vm.kvp.update(kvp)
        except PsError as e:
            return self.fail(cmd, e)
        out = json.dumps({"ok": True, "result": result}, separators=(",", ":"), ensure_ascii=False)
        cmd.write("stdout", out.encode("utf-8"))
        record["exit_code"] = 0
        return 0

    def fail(self, cmd: Any, e: PsError) -> int:
        out = json.dumps({"ok": False, "error": e.record()}, separators=(",", ":"), ensure_ascii=False)
        cmd.write("stdout", out.encode("utf-8"))
        return 1

    # -- deploy scripts (scripts/deploy/*.ps1) ---------------------------------------------------
    def deploy_get_hcp_deployment(self, host: str, hv: HyperVHost, p: dict[str, Any]) -> dict[str, Any]:
        with hv.fs_lock:
            marker = hv.fs.get(norm(p["ScriptDir"] + "\\VERSION"))
        return {"Version": marker.decode().strip() if marker is not None else None}

    def deploy_write_hcp_file_chunk(self, host: str, hv: HyperVHost, p: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            faults = self.faults.setdefault(host, {})
            after = faults.get("interrupt_upload_after")
            interrupt = after == 0
            if after is not None:
                faults["interrupt_upload_after"] = after - 1
                if interrupt:
                    del faults["interrupt_upload_after"]
        if interrupt:
            raise PsError("WriteError", "Unable to write data to the transport connection: An existing connection was forcibly closed by the remote host.", "Write-HcpFileChunk", "System.IO.IOException")
        key = norm(p["Path"])
        data = base64.b64decode(p["Data"])
        with hv.fs_lock:
            current = hv.fs.get(key, b"") if p["Offset"] else b""
            if p["Offset"] != len(current):
                raise PsError("InvalidArgument", f"Chunk offset {p['Offset']} does not match the length {len(current)} of '{p['Path']}'.", "Write-HcpFileChunk", "ChunkOffsetMismatch,Write-HcpFileChunk.ps1")
            hv.fs[key] = current + data
            return {"Length": len(hv.fs[key])}

    def deploy_complete_hcp_file(self, host: str, hv: HyperVHost, p: dict[str, Any]) -> dict[str, Any]:
        with hv.fs_lock:
            part = hv.fs.get(norm(p["PartPath"]))
            if part is None:
                raise PsError("ObjectNotFound", f"Cannot find path '{p['PartPath']}' because it does not exist.", "Get-FileHash", "FileNotFound,Microsoft.PowerShell.Commands.GetFileHashCommand")
            digest = hashlib.sha256(part).hexdigest().upper()
            if digest != p["Sha256"].upper():
                del hv.fs[norm(p["PartPath"])]
                raise PsError("InvalidData", f"Checksum mismatch for '{p['Path']}': expected {p['Sha256'].upper()}, got {digest}.", "Complete-HcpFile", "ChecksumMismatch,Complete-HcpFile.ps1")
            hv.fs[norm(p["Path"])] = hv.fs.pop(norm(p["PartPath"]))
            return {"Sha256": digest}

    def deploy_publish_hcp_deployment(self, host: str, hv: HyperVHost, p: dict[str, Any]) -> dict[str, Any]:
        staging = norm(p["StagingDir"])
        target = norm(p["ScriptDir"] + "\\" + p["Version"])
        with hv.fs_lock:
            for k in [k for k in hv.fs if k.startswith(target + "\\")]:
                del hv.fs[k]
            for k in [k for k in hv.fs if k.startswith(staging + "\\")]:
                if k.endswith(".part"):
                    raise PsError("InvalidOperation", f"The staging directory '{p['StagingDir']}' still holds a partial file.", "Publish-HcpDeployment", "PartialFile,Publish-HcpDeployment.ps1")
                hv.fs[target + k[len(staging):]] = hv.fs.pop(k)
            hv.fs[norm(p["ScriptDir"] + "\\VERSION")] = p["Version"].encode()
        return {"Version": p["Version"]}

    def deploy_clear_hcp_staging(self, host: str, hv: HyperVHost, p: dict[str, Any]) -> dict[str, Any]:
        staging = norm(p["StagingDir"])
        with hv.fs_lock:
            gone = [k for k in hv.fs if k.startswith(staging + "\\")]
            for k in gone:
                del hv.fs[k]
        return {"Removed": len(gone)}
