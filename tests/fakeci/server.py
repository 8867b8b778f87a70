#!/usr/bin/python3
"""fakeci: a BK-CI compatible dispatch server for testing the C GoAgent.

It implements every endpoint the agent calls (wire protocol spec, section 7)
on 127.0.0.1, checks authentication headers and request body shapes the way
the real Kotlin services do, records every request, and lets tests steer it
through an admin API (HTTP under /admin/, or the FakeCI methods in-process).

Stdlib only. Run as a script (see --help) or import FakeCI. The full
contract is documented in README.md next to this file.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import json
import os
import signal
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

HOST = "127.0.0.1"

ENV = "/ms/environment/api/buildAgent/agent/thirdPartyAgent"
DISPATCH = "/ms/dispatch/api/buildAgent/agent/thirdPartyAgent"
LOGS = "/ms/log/api/build/logs"
WORKER = "/ms/fakeci/worker"
ASK = DISPATCH + "/ask"

AGENT_STATUSES = ("UN_IMPORT", "UN_IMPORT_OK", "IMPORT_OK", "IMPORT_EXCEPTION", "DELETE")
BUILD_TYPES = ("ALL", "DOCKER", "BINARY")
UPGRADE_ITEMS = ("agent", "worker", "jdk", "dockerInitFile")
FAULT_MODES = ("500", "html", "garbage", "truncated", "wrongtype", "huge",
               "close", "stall", "late", "down", "json", "redirect")
# Things /admin/wait and FakeCI.wait_for can count.
COUNTABLE = ("requests", "finished", "violations", "pipeline_updates",
             "upgrade_finishes", "logs", "metrix", "worker_ends", "pulled", "rate_limited")
# Parts of the ask answer that corrupt_ask() can replace ("data" = the whole
# data value, "agentStatus" = the top-level agentStatus).
ASK_PARTS = ("heartbeat", "build", "upgrade", "pipeline", "data", "agentStatus")
# What a server without /ask answers (Jersey's NotFoundExceptionMapper).
PRE_ASK_404 = {"status": 404, "message": "资源不存在", "data": "HTTP 404 Not Found"}

MAX_BODY = 64 * 1024 * 1024
HUGE_BODY_BYTES = 20 * 1024 * 1024
ENDLESS_BOUND = 64 * 1024 * 1024    # add_file(endless=True) stops after this much


# --------------------------------------------------------------------------
# Request body shapes (protocol.md sections 5.5 and 7).
#
# An object schema maps key -> (type, required). "required" means the Kotlin
# constructor parameter is non-nullable without a default: the key must be
# present and non-null. Optional keys may be absent or null, but when present
# they must have the right JSON type. Keys are case-sensitive and unknown keys
# are ignored, like Jackson. Deliberately stricter than Jackson in one way:
# no scalar coercion (a "4" for an int is a violation, Jackson would accept it).
# Types: "string", "int", "long", "bool", ("array", item), ("enum", names),
# or a nested object schema (dict).
# --------------------------------------------------------------------------

def _arr(item):
    return ("array", item)


def _enum(*names):
    return ("enum", names)


REQ, OPT = True, False

DOCKER_INIT_FILE_INFO = {"fileMd5": ("string", REQ), "needUpgrade": ("bool", REQ)}

AGENT_START_INFO = {
    "hostname": ("string", REQ),
    "hostIp": ("string", REQ),
    "detectOS": ("string", REQ),
    "masterVersion": ("string", OPT),
    "version": ("string", OPT),
}

HEARTBEAT_INFO = {
    "masterVersion": ("string", REQ),
    "slaveVersion": ("string", REQ),
    "hostName": ("string", REQ),
    "agentIp": ("string", REQ),
    "parallelTaskCount": ("int", REQ),
    "agentInstallPath": ("string", REQ),
    "startedUser": ("string", REQ),
    "taskList": (_arr({"projectId": ("string", REQ), "buildId": ("string", REQ),
                       "vmSeqId": ("string", REQ), "workspace": ("string", REQ)}), OPT),
    "props": ({"arch": ("string", REQ),
               "jdkVersion": (_arr("string"), OPT),
               "dockerInitFileMd5": (DOCKER_INIT_FILE_INFO, OPT),
               "osVersion": ("string", OPT)}, OPT),
    "agentId": ("long", OPT),
    "projectId": ("string", OPT),
    "heartbeatTime": ("long", OPT),
    "busyTaskSize": ("int", OPT),
    "dockerParallelTaskCount": ("int", OPT),
    "dockerTaskList": (_arr({"projectId": ("string", REQ), "buildId": ("string", REQ),
                             "vmSeqId": ("string", REQ)}), OPT),
    "dockerBusyTaskSize": ("int", OPT),
    "errorExitData": ({"errorEnum": (_enum("THIRD_AGENT_EXIT_NOT_WORKER",
                                           "THIRD_AGENT_EXIT_LEFT_DEVICE",
                                           "THIRD_AGENT_EXIT_PERMISSION_DENIED",
                                           "THIRD_AGENT_EXIT_JDK_ERROR",
                                           "THIRD_AGENT_EXIT_WORKER_ERROR"), REQ),
                       "message": ("string", OPT)}, OPT),
}

UPGRADE_BY_VERSION_INFO = {
    "workerVersion": ("string", OPT),
    "goAgentVersion": ("string", OPT),
    "jdkVersion": (_arr("string"), OPT),
    "dockerInitFileInfo": (DOCKER_INIT_FILE_INFO, OPT),
}

BUILD_WITH_STATUS = {
    "projectId": ("string", REQ),
    "buildId": ("string", REQ),
    "vmSeqId": ("string", REQ),
    "workspace": ("string", REQ),
    "pipelineId": ("string", OPT),
    "success": ("bool", REQ),
    "message": ("string", OPT),
    "error": ({"errorType": ("string", REQ), "errorMessage": ("string", REQ),
               "errorCode": ("int", REQ)}, OPT),
    "executeCount": ("int", OPT),
}

# ThirdPartyAskInfo (HEAD): the heartbeat is NewHeartbeatInfo, whose
# AgentErrorExitData.errorEnum is a plain non-null String at HEAD.
ASK_ENABLE = {
    "build": (_enum("ALL", "DOCKER", "BINARY", "NONE"), REQ),
    "upgrade": ("bool", REQ),
    "dockerDebug": ("bool", REQ),
    "pipeline": ("bool", REQ),
}

ASK_HEARTBEAT_INFO = dict(HEARTBEAT_INFO, errorExitData=(
    {"errorEnum": ("string", REQ), "message": ("string", OPT)}, OPT))

ASK_INFO = {
    "askEnable": (ASK_ENABLE, REQ),
    "heartbeat": (ASK_HEARTBEAT_INFO, REQ),
    "upgrade": (UPGRADE_BY_VERSION_INFO, OPT),
}

PIPELINE_RESPONSE = {
    "seqId": ("string", REQ),
    "status": (_enum("PENDING", "EXECUTING", "TIMEOUT", "FAILURE", "SUCCESS"), REQ),
    "response": ("string", REQ),
}

LOG_MESSAGE = {
    "message": ("string", REQ),
    "timestamp": ("long", REQ),
    "tag": ("string", OPT),
    "jobId": ("string", OPT),
    "logType": (_enum("LOG", "DEBUG", "WARN", "ERROR"), OPT),
    "executeCount": ("int", OPT),
    "subTag": ("string", OPT),
    "stepId": ("string", OPT),
    "containerHashId": ("string", OPT),
}

WORKER_END = {
    "buildId": ("string", REQ),
    "vmSeqId": ("string", REQ),
    "exitCode": ("int", REQ),
}


def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def check_shape(value, spec, where: str = "$") -> list[str]:
    """Return the list of shape errors of a decoded JSON value (empty = OK)."""
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            return [f"{where}: expected object, got {_json_type(value)}"]
        errors = []
        for key, (sub, required) in spec.items():
            if value.get(key) is None:
                if required:
                    errors.append(_missing_key_error(value, key, where))
                continue
            errors += check_shape(value[key], sub, f"{where}.{key}")
        return errors
    if isinstance(spec, tuple) and spec[0] == "array":
        if not isinstance(value, list):
            return [f"{where}: expected array, got {_json_type(value)}"]
        errors = []
        for i, item in enumerate(value):
            errors += check_shape(item, spec[1], f"{where}[{i}]")
        return errors
    if isinstance(spec, tuple) and spec[0] == "enum":
        if not isinstance(value, str) or value not in spec[1]:
            return [f"{where}: expected one of {'/'.join(spec[1])}, got {json.dumps(value)}"]
        return []
    if spec == "string":
        ok = isinstance(value, str)
    elif spec == "bool":
        ok = isinstance(value, bool)
    elif spec in ("int", "long"):
        bits = 31 if spec == "int" else 63
        ok = (isinstance(value, int) and not isinstance(value, bool)
              and -(1 << bits) <= value < (1 << bits))
    else:
        raise ValueError(f"bad schema type {spec!r}")
    if ok:
        return []
    return [f"{where}: expected {spec}, got {_json_type(value)} {json.dumps(value)[:40]}"]


def _missing_key_error(obj: dict, key: str, where: str) -> str:
    if key in obj:
        return f"{where}.{key}: required key is null"
    near = [k for k in obj if k.lower() == key.lower()]
    if near:
        return f"{where}.{key}: required key missing (found {near[0]!r}; keys are case-sensitive)"
    return f"{where}.{key}: required key missing"


# --------------------------------------------------------------------------
# Replies and fault rules
# --------------------------------------------------------------------------

@dataclass
class Reply:
    """What the HTTP handler should send back."""
    code: int = 200
    body: bytes = b""
    content_type: str | None = "application/json"
    headers: dict = field(default_factory=dict)
    close: bool = False             # close the connection without any response
    send_bytes: int | None = None   # send only this many body bytes, then close
    stall: float = 0.0              # with send_bytes: hang this long before closing
    stream: object = None           # callable(stop_event) -> iterator of body chunks;
                                    # sent as they come, then the connection closes
    length: bool = True             # with stream: send Content-Length: len(body)
    record: dict | None = None      # lean mode: the request record, given wire sizes

    @classmethod
    def json(cls, obj, code: int = 200) -> "Reply":
        return cls(code=code, body=_dumps(obj))

    @classmethod
    def dropped(cls) -> "Reply":
        return cls(close=True, content_type=None)


@dataclass
class Fault:
    path_contains: str
    mode: str
    count: int = 1                  # requests to affect; -1 = until cleared
    seconds: float = 10.0           # "stall" and "late" only
    method: str | None = None       # only this HTTP method (default: any)
    variant: str | None = None      # "truncated": honest|close; "wrongtype": data|status
    body: object = None             # "json": the JSON value to answer with
    raw: str | None = None          # "json": raw text to answer with instead
    location: str | None = None     # "redirect": the Location header
    code: int = 307                 # "redirect": the status

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _dumps(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def _result(data=None, status: int = 0, message: str | None = None, **extra) -> dict:
    """A BK-CI Result / AgentResult; null fields are dropped (NON_NULL mapper)."""
    out = {"status": status}
    if message is not None:
        out["message"] = message
    out.update({k: v for k, v in extra.items() if v is not None})
    if data is not None:
        out["data"] = data
    return out


def _hex_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


# --------------------------------------------------------------------------
# The server state machine
# --------------------------------------------------------------------------

def default_state() -> dict:
    """Server-side agent state; all keys can be changed with set_state()."""
    return {
        "agentStatus": "IMPORT_OK",     # stored status (heartbeat, pulls, upgrade)
        "status": None,                 # GET status answer; None = agentStatus
        "startupStatus": None,          # POST startup answer; None = server rules
        "parallelTaskCount": 4,         # None = adopt from the next heartbeat
        "dockerParallelTaskCount": 4,
        "envs": {},
        "gateway": None,                # None = key absent in the heartbeat answer
        "fileGateway": None,
        "props": {},
        "language": "en_US",            # matches the test .agent.properties
        "slaveVersion": "",
        "createMod": False,
        "pascalCaseKeys": False,        # heartbeat answer uses AgentStatus/ParallelTaskCount
        "rateLimits": False,            # enforce the server's minimum call spacing
        "upgradingSeconds": 60.0,       # no builds handed out after an upgrade answer
        "askSupported": True,           # False: POST .../ask answers like a pre-ask server
    }


RATE_LIMITS = {"status": 3.0, "heartbeat": 4.0, "pipelines": 10.0, "ask": 3.0}


class FakeCI:
    """In-process fake BK-CI server. start()/stop(), url, port, admin helpers."""

    def __init__(self, project_id: str = "demo-proj", agent_id: str = "fakeci-agent",
                 secret_key: str = "fakeci-secret", port: int = 0,
                 state_dir: str | None = None, verbose: bool = False, lean: bool = False):
        """lean (benches with many agents): requests() records keep only t,
        method, path, url, agent (X-DEVOPS-AGENT-ID), fault, status and the
        wire sizes rx/tx in bytes (request and response, headers included);
        no headers, body or decoded JSON, and nothing is persisted."""
        self.project_id = project_id
        self.agent_id = agent_id
        self.secret_key = secret_key
        self.lean = lean
        self._agents: dict = {agent_id: secret_key}   # every identity that may call
        self.state_dir = state_dir
        self.verbose = verbose
        self._want_port = port
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._cond = threading.Condition(threading.RLock())
        self._stopping = threading.Event()
        self._huge: bytes | None = None
        with self._cond:
            self._reset_locked()
        if state_dir:
            os.makedirs(state_dir, exist_ok=True)

    # ----- lifecycle --------------------------------------------------------

    def start(self) -> "FakeCI":
        """Start serving; after a stop() the same port is bound again."""
        self._stopping.clear()
        self._httpd = _Server(self, self._want_port)
        self._want_port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        name="fakeci", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop open connections (state is kept). Waits (up to
        5 s) for the requests being handled to end, so that none sent before
        stop() is handled after it returns (a test that kills an agent while
        the server is away relies on it)."""
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.close_all_connections()
            self._httpd.wait_idle(5.0)
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "FakeCI":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("fakeci is not running")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def gateway(self) -> str:
        """Value for landun.gateway (host:port, no scheme, like real installs)."""
        return f"{HOST}:{self.port}"

    def auth_headers(self) -> dict:
        """The four headers an agent (or worker) must send."""
        return {"X-DEVOPS-BUILD-TYPE": "AGENT", "X-DEVOPS-PROJECT-ID": self.project_id,
                "X-DEVOPS-AGENT-ID": self.agent_id, "X-DEVOPS-AGENT-SECRET-KEY": self.secret_key}

    def add_agent(self, agent_id: str, secret_key: str) -> None:
        """Accept one more agent identity (same project and state), for fleets.

        Every identity shares the one state, build queue and rate-limit
        windows (so keep rateLimits off with more than one agent)."""
        with self._cond:
            self._agents[agent_id] = secret_key

    def _known_agent(self, agent_id, secret_key) -> bool:
        return agent_id is not None and self._agents.get(agent_id) == secret_key

    # ----- admin helpers (mirror the /admin/ HTTP API) -----------------------

    def reset(self) -> None:
        """Forget everything except identity and port."""
        with self._cond:
            self._reset_locked()
            self._cond.notify_all()

    def set_state(self, **fields) -> dict:
        with self._cond:
            unknown = set(fields) - set(self.state)
            if unknown:
                raise ValueError(f"unknown state keys: {sorted(unknown)}")
            for key in ("agentStatus", "status", "startupStatus"):
                if key not in fields or (key != "agentStatus" and fields[key] is None):
                    continue
                if fields[key] not in AGENT_STATUSES:
                    raise ValueError(f"{key} must be one of {AGENT_STATUSES}")
            self.state.update(fields)
            self._cond.notify_all()
            return self.get_state()

    def get_state(self) -> dict:
        with self._cond:
            out = json.loads(json.dumps(self.state))
            out["lastStartup"] = self._last_startup
            out["lastHeartbeat"] = self._last_heartbeat
            out["upgrading"] = self._upgrading_until > time.monotonic()
            return out

    def queue_build(self, script: str | None = None, raw=None, **data) -> dict:
        """Queue a build; returns the record {..build data.., "script": ...}.

        Keys of ThirdPartyBuildInfo may be given (projectId, buildId, vmSeqId,
        workspace, pipelineId, executeCount, containerHashId, dockerBuildInfo).
        `raw` queues an arbitrary JSON value that the pull returns verbatim.
        """
        allowed = {"projectId", "buildId", "vmSeqId", "workspace", "pipelineId",
                   "executeCount", "containerHashId", "dockerBuildInfo"}
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"unknown build keys: {sorted(unknown)}; allowed: {sorted(allowed)}")
        if raw is not None:
            entry = {"raw": raw, "script": script or ""}
        else:
            build = {
                "projectId": self.project_id,
                "buildId": _hex_id("b-"),
                "vmSeqId": "1",
                "workspace": "",
                "pipelineId": _hex_id("p-"),
                "executeCount": 1,
                "containerHashId": _hex_id("c-"),
            }
            build.update(data)
            dbi = build.get("dockerBuildInfo")
            if isinstance(dbi, dict):
                # The server registers a per-build docker "agent"; the worker
                # in the container authenticates with it (docker_build).
                dbi = dict(dbi)
                dbi.setdefault("agentId", _hex_id("docker-"))
                dbi.setdefault("secretKey", _hex_id(""))
                build["dockerBuildInfo"] = dbi
            if script is None:
                script = 'echo "fakeci build $BUILD_ID running"'
            entry = {"data": build, "script": script}
        with self._cond:
            self._queued.append(entry)
            if "data" in entry:
                self._known[self._build_key(entry["data"])] = entry
            self._cond.notify_all()
        return self._entry_view(entry)

    def builds(self) -> dict:
        with self._cond:
            return {"queued": [self._entry_view(e) for e in self._queued],
                    "running": [self._entry_view(e) for e in self._running.values()],
                    "pulled": [self._entry_view(e) for e in self._pulled]}

    def queue_pipeline(self, command: str | None = None, seq_id: str | None = None,
                       data=None, max_serves: int | None = None) -> dict:
        """Queue a pipeline item: a COMMAND, or a raw `data` JSON value."""
        if data is None:
            if command is None:
                raise ValueError("give command or data")
            data = {"type": "COMMAND", "seqId": seq_id or uuid.uuid4().hex[:8], "command": command}
        seq = data.get("seqId") if isinstance(data, dict) else None
        item = {"seqId": seq, "data": data, "maxServes": max_serves, "served": 0}
        with self._cond:
            self._pipelines.append(item)
            self._cond.notify_all()
            return dict(item)

    def pipelines(self) -> list:
        with self._cond:
            return [dict(i) for i in self._pipelines]

    def set_upgrade(self, **answer) -> dict:
        """Set the upgradeNew answer.

        agent/worker/jdk/dockerInitFile: bools answered as given.
        agentVersion/workerVersion/jdkVersion/dockerInitFileMd5: when set, the
        matching item is decided like the real server (request value differs).
        agentStatus: answer with this status (non-IMPORT_OK forces all false).
        """
        allowed = set(UPGRADE_ITEMS) | {"agentVersion", "workerVersion", "jdkVersion",
                                        "dockerInitFileMd5", "agentStatus"}
        unknown = set(answer) - allowed
        if unknown:
            raise ValueError(f"unknown upgrade keys: {sorted(unknown)}")
        with self._cond:
            self._upgrade = dict(answer)
            return dict(self._upgrade)

    def add_file(self, name: str, content: bytes, md5: str | None = None,
                 stall: float | None = None, truncate: bool = False, endless: bool = False,
                 trickle: float | None = None, redirect: str | None = None,
                 redirect_code: int = 302) -> dict:
        """Register a downloadable file under its server name.

        md5: X-Checksum-Md5 value to send instead of the real one ("" = omit).
        stall: send headers and half the body, hang this many seconds, close.
        truncate: advertise the full Content-Length, send half, close.
        endless: no Content-Length, the content repeated until the client
          hangs up (or the server stops, or 64 MiB were sent: a client
          without a cap must not fill the test machine's disk).
        trickle: the full Content-Length, then the body at this many bytes a
          second.
        redirect: answer redirect_code with this Location instead of the file.
        """
        real = hashlib.md5(content).hexdigest()
        with self._cond:
            self._files[name] = {"content": bytes(content), "md5": real, "md5_header": md5,
                                 "stall": stall, "truncate": bool(truncate),
                                 "endless": bool(endless), "trickle": trickle,
                                 "redirect": redirect, "redirect_code": int(redirect_code)}
        return {"name": name, "md5": real, "size": len(content)}

    def remove_file(self, name: str) -> None:
        with self._cond:
            self._files.pop(name, None)

    def add_fault(self, path_contains: str, mode: str, count: int = 1, **options) -> dict:
        if mode not in FAULT_MODES:
            raise ValueError(f"mode must be one of {FAULT_MODES}")
        if count == 0 or count < -1:
            raise ValueError("count must be positive or -1")
        fault = Fault(path_contains=path_contains, mode=mode, count=count, **options)
        with self._cond:
            self._faults.append(fault)
        return fault.as_dict()

    def faults(self) -> list:
        with self._cond:
            return [f.as_dict() for f in self._faults]

    def clear_faults(self) -> None:
        with self._cond:
            self._faults.clear()

    def corrupt_ask(self, part: str, value, count: int = 1) -> list:
        """Make the next `count` built ask answers carry `value` in place of `part`.

        part: one of ASK_PARTS. value: any JSON value; None makes the part
        absent as if it had failed on the server. count: answers to affect,
        -1 = until cleared. A corrupted part's logic does not run (a build
        stays queued, no upgrade mark, no pipeline serve), except the
        heartbeat's, which always runs. Returns all corruptions.
        """
        if part not in ASK_PARTS:
            raise ValueError(f"part must be one of {ASK_PARTS}")
        if not isinstance(count, int) or isinstance(count, bool) or count == 0 or count < -1:
            raise ValueError("count must be positive or -1")
        value = json.loads(json.dumps(value))      # a private copy; must be JSON
        with self._cond:
            self._ask_corruptions[part] = {"part": part, "value": value, "count": count}
        return self.ask_corruptions()

    def ask_corruptions(self) -> list:
        """The pending corrupt_ask() rules, [{"part","value","count"}]."""
        with self._cond:
            return json.loads(json.dumps(list(self._ask_corruptions.values())))

    def clear_ask_corruptions(self) -> None:
        with self._cond:
            self._ask_corruptions.clear()

    def set_down(self, down: bool = True) -> None:
        """Make every non-admin endpoint drop its connection (server "down")."""
        with self._cond:
            self._down = bool(down)

    def set_hang(self, hang: bool = True) -> None:
        """Hold every non-admin request unanswered until set_hang(False) (or
        stop()), then drop its connection: a gateway that accepts and never
        answers."""
        with self._cond:
            self._hang = bool(hang)
            self._cond.notify_all()

    @property
    def is_down(self) -> bool:
        return self._down

    def requests(self, path_contains: str | None = None, method: str | None = None) -> list:
        with self._cond:
            return [dict(r) for r in self._requests
                    if (path_contains is None or path_contains in r["url"])
                    and (method is None or r["method"] == method.upper())]

    def asks(self) -> list:
        """Decoded bodies of every POST .../ask received, in arrival order.

        Every ask is listed, also one answered by a fault, the rate limit, a
        violation or askSupported=False; an undecodable body is None.
        """
        return [r["json"] for r in self.requests(path_contains=ASK, method="POST")
                if r["path"] == ASK]

    def log_messages(self, build_id: str | None = None) -> list[str]:
        """Text of the build log lines received, optionally for one build."""
        return [entry["message"] for entry in self.logs
                if build_id is None or entry["buildId"] == build_id]

    def _copy(self, name: str) -> list:
        with self._cond:
            return json.loads(json.dumps(getattr(self, name)))

    finished = property(lambda self: self._copy("_finished"),
                        doc="workerBuildFinish bodies in arrival order (duplicates kept)")
    violations = property(lambda self: self._copy("_violations"),
                          doc="protocol violations seen (auth, content type, body shape...)")
    pipeline_updates = property(lambda self: self._copy("_pipeline_updates"))
    upgrade_finishes = property(lambda self: self._copy("_upgrade_finishes"))
    metrix = property(lambda self: self._copy("_metrix"))
    logs = property(lambda self: self._copy("_logs"))
    worker_ends = property(lambda self: self._copy("_worker_ends"))
    rate_limited = property(lambda self: self._copy("_rate_limited"),
                            doc="calls refused with 'request too frequently'")
    pulled = property(lambda self: [self._entry_view(e) for e in self._copy("_pulled")])

    def count(self, what: str, path_contains: str | None = None) -> int:
        if what not in COUNTABLE:
            raise ValueError(f"what must be one of {COUNTABLE}")
        with self._cond:
            if what in ("requests", "rate_limited"):
                return sum(1 for r in getattr(self, "_" + what)
                           if path_contains is None or path_contains in r["url"])
            return len(getattr(self, "_" + what))

    def wait_for(self, what: str, count: int = 1, timeout: float = 10.0,
                 path_contains: str | None = None) -> bool:
        """Block until count(what) >= count; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.count(what, path_contains) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stopping.is_set():
                    return False
                self._cond.wait(min(remaining, 0.5))
            return True

    def wait_until(self, predicate, timeout: float = 10.0) -> bool:
        """Block until predicate() is true (re-checked on every state change)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stopping.is_set():
                    return False
                self._cond.wait(min(remaining, 0.5))
            return True

    # ----- internals --------------------------------------------------------

    def _reset_locked(self) -> None:
        self.state = default_state()
        self._requests: list = []
        self._violations: list = []
        self._queued: list = []
        self._running: dict = {}
        self._known: dict = {}
        self._pulled: list = []
        self._finished: list = []
        self._pipelines: list = []
        self._pipeline_updates: list = []
        self._upgrade: dict = {}
        self._upgrading_until = 0.0
        self._files: dict = {}
        self._upgrade_finishes: list = []
        self._faults: list = []
        self._down = False
        self._hang = False
        self._metrix: list = []
        self._logs: list = []
        self._worker_ends: list = []
        self._last_call: dict = {}
        self._rate_limited: list = []
        self._ask_corruptions: dict = {}
        self._last_startup = None
        self._last_heartbeat = None

    @staticmethod
    def _build_key(data) -> tuple | None:
        if isinstance(data, dict) and isinstance(data.get("buildId"), str):
            return (data["buildId"], str(data.get("vmSeqId", "")))
        return None

    @staticmethod
    def _entry_view(entry: dict) -> dict:
        if "raw" in entry:
            return {"raw": entry["raw"], "script": entry["script"]}
        view = dict(entry["data"], script=entry["script"])
        if "pulledAt" in entry:
            view["pulledAt"] = entry["pulledAt"]
        return view

    def _persist(self, name: str, obj) -> None:
        if not self.state_dir:
            return
        with self._cond, open(os.path.join(self.state_dir, name), "a", encoding="utf-8") as fh:
            fh.write(json.dumps(obj, ensure_ascii=False) + "\n")

    def _violation(self, ctx: "_Call", kind: str, message: str) -> None:
        entry = {"t": time.time(), "method": ctx.method, "path": ctx.path,
                 "kind": kind, "message": message}
        with self._cond:
            self._violations.append(entry)
            self._persist("violations.jsonl", entry)
            self._cond.notify_all()
        if self.verbose:
            print(f"fakeci: VIOLATION {kind} {ctx.method} {ctx.path}: {message}", flush=True)

    # ----- request entry point ------------------------------------------------

    def handle(self, method: str, raw_path: str, headers: dict, body: bytes) -> Reply:
        """Answer one HTTP request (headers: lower-case names)."""
        split = urlsplit(raw_path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        if split.path == "/admin" or split.path.startswith("/admin/"):
            return self._admin(method, split.path, query, body)
        return self._agent_call(_Call(method, split.path, raw_path, query, headers, body))

    def _agent_call(self, ctx: "_Call") -> Reply:
        if self.lean:
            record = {"t": time.time(), "method": ctx.method, "path": ctx.path,
                      "url": ctx.url, "agent": ctx.headers.get("x-devops-agent-id"),
                      "fault": None, "status": None, "rx": 0, "tx": 0}
        else:
            record = {"t": time.time(), "method": ctx.method, "path": ctx.path,
                      "url": ctx.url, "query": ctx.query, "headers": ctx.headers,
                      "body": ctx.text, "json": ctx.json, "fault": None, "status": None}
        with self._cond:
            self._requests.append(record)
            hung = self._hang
            while self._hang and not self._stopping.is_set():
                self._cond.wait(0.5)
            down = self._down or hung
            fault = None if down else self._take_fault(ctx)
            self._cond.notify_all()
        if self.verbose:
            print(f"fakeci: {ctx.method} {ctx.url}", flush=True)

        if down:
            record["fault"] = "hang" if hung else "down"
            reply = Reply.dropped()
        elif fault is not None:
            record["fault"] = fault.mode
            reply = self._fault_reply(fault, ctx)
        else:
            reply = self._route(ctx)
        record["status"] = None if reply.close else reply.code
        if self.lean:
            reply.record = record
        else:
            self._persist("requests.jsonl", record)
        return reply

    def _take_fault(self, ctx: "_Call") -> Fault | None:
        for fault in self._faults:
            if fault.path_contains not in ctx.url:
                continue
            if fault.method and fault.method.upper() != ctx.method:
                continue
            if fault.count > 0:
                fault.count -= 1
                if fault.count == 0:
                    self._faults.remove(fault)
            return fault
        return None

    def _route(self, ctx: "_Call") -> Reply:
        methods = ROUTES.get(ctx.path)
        if methods is None:
            self._violation(ctx, "endpoint", "no such endpoint")
            return Reply.json(_result(status=404, message=f"no such endpoint {ctx.path}"), 404)
        route = methods.get(ctx.method)
        if route is None:
            self._violation(ctx, "endpoint", f"method not allowed (allowed: {sorted(methods)})")
            return Reply.json(_result(status=405, message="method not allowed"), 405)
        if route.gate is not None:
            closed = route.gate(self, ctx)
            if closed is not None:
                return closed
        if route.auth in ("agent", "worker"):
            denied = self._check_auth(ctx, route)
            if denied is not None:
                return denied
        elif route.auth == "log":
            denied = self._check_log_auth(ctx)
            if denied is not None:
                return denied
        if route.schema is not None:
            invalid = self._check_body(ctx, route.schema)
            if invalid is not None:
                return invalid
        elif ctx.method in ("POST", "PUT") and ctx.body and route.auth != "none":
            if not self._content_type_ok(ctx):
                return self._bad_content_type(ctx)
        return route.handler(self, ctx)

    # ----- checks -------------------------------------------------------------

    def _docker_entry(self, headers: dict) -> dict | None:
        """The known build whose dockerBuildInfo agentId/secretKey the headers carry."""
        agent, secret = headers.get("x-devops-agent-id"), headers.get("x-devops-agent-secret-key")
        if not agent or not secret:
            return None
        with self._cond:
            for entry in self._known.values():
                dbi = entry["data"].get("dockerBuildInfo")
                if (isinstance(dbi, dict) and dbi.get("agentId") == agent
                        and dbi.get("secretKey") == secret):
                    return entry
        return None

    def _check_auth(self, ctx: "_Call", route: "_Route") -> Reply | None:
        if route.auth == "worker" and self._docker_entry(ctx.headers) is not None:
            return None
        agent = ctx.headers.get("x-devops-agent-id")
        if agent not in self._agents:
            agent = self.agent_id
        expected = {"x-devops-build-type": "AGENT", "x-devops-project-id": self.project_id,
                    "x-devops-agent-id": agent,
                    "x-devops-agent-secret-key": self._agents[agent]}
        problems = []
        for name, want in expected.items():
            got = ctx.headers.get(name)
            if got is None or got.strip() == "":
                problems.append(f"header {name} missing")
            elif got != want:
                problems.append(f"header {name} has a wrong value")
        if not problems:
            return None
        message = "; ".join(problems)
        self._violation(ctx, "auth", message)
        return route.auth_fail(self, ctx, message)

    def _check_log_auth(self, ctx: "_Call") -> Reply | None:
        # The gateway's auth_build.lua: headers first, then the registration
        # the build pull made for (secret, agent id, build id, vmSeqId).
        h = ctx.headers
        need = ("x-devops-agent-secret-key", "x-devops-agent-id", "x-devops-build-id")
        docker = self._docker_entry(h)
        docker_ok = docker is not None and self._build_key(docker["data"]) == (
            h.get("x-devops-build-id"), h.get("x-devops-vm-sid"))
        if (h.get("x-devops-build-type") != "AGENT" or any(not h.get(n) for n in need)
                or (not docker_ok and not self._known_agent(
                    h.get("x-devops-agent-id"), h.get("x-devops-agent-secret-key")))):
            self._violation(ctx, "auth", "log call without valid agent/build headers")
            return Reply.json({"status": 401, "data": "", "result": True,
                               "message": "unauthorized (fakeci gateway)"}, 401)
        if not h.get("x-devops-vm-sid"):
            self._violation(ctx, "auth", "log call without X-DEVOPS-VM-SID")
        key = (h["x-devops-build-id"], h.get("x-devops-vm-sid", ""))
        with self._cond:
            running = key in self._running
        if not running:
            self._violation(ctx, "log-auth", f"log line for a build that is not running: {key}")
            return Reply.json({"status": 500, "data": "buildEnd", "errorCode": 2101182,
                               "message": "构建已结束 (build has ended)"}, 401)
        return None

    @staticmethod
    def _content_type_ok(ctx: "_Call") -> bool:
        parts = [p.strip().lower() for p in ctx.headers.get("content-type", "").split(";")]
        return parts[0] == "application/json" and "charset=utf-8" in parts[1:]

    def _bad_content_type(self, ctx: "_Call") -> Reply:
        got = ctx.headers.get("content-type")
        self._violation(ctx, "content-type",
                        f"Content-Type must be 'application/json; charset=utf-8', got {got!r}")
        return Reply.json(_result(status=415, message="unsupported media type"), 415)

    def _check_body(self, ctx: "_Call", schema) -> Reply | None:
        if not self._content_type_ok(ctx):
            return self._bad_content_type(ctx)
        if ctx.json_error is not None:
            message = f"body is not valid JSON: {ctx.json_error}"
        else:
            errors = check_shape(ctx.json, schema)
            if not errors:
                return None
            message = "; ".join(errors)
        self._violation(ctx, "body", message)
        return Reply.json(_result(status=400, message=message), 400)

    def _too_frequent(self, name: str, ctx: "_Call") -> bool:
        """Apply the RATE_LIMITS[name] spacing (state rateLimits); record refusals."""
        with self._cond:
            if not self.state["rateLimits"]:
                return False
            now = time.monotonic()
            last = self._last_call.get(name)
            if last is not None and now - last < RATE_LIMITS[name]:
                self._rate_limited.append({"t": time.time(), "name": name,
                                           "method": ctx.method, "url": ctx.url})
                self._cond.notify_all()
                return True
            self._last_call[name] = now
            return False

    # ----- agent endpoints ------------------------------------------------------

    def _ep_startup(self, ctx: "_Call") -> Reply:
        with self._cond:
            self._last_startup = ctx.json
            override = self.state["startupStatus"]
            stored = self.state["agentStatus"]
            if override is not None:
                answer = override
            elif stored == "UN_IMPORT":
                answer = "UN_IMPORT_OK"         # the server imports the node itself
                self.state["agentStatus"] = "IMPORT_OK"
            elif stored == "IMPORT_EXCEPTION":
                answer = self.state["agentStatus"] = "IMPORT_OK"
            else:
                answer = stored
            self._cond.notify_all()
        return Reply.json(_result(answer))

    def _ep_status(self, ctx: "_Call") -> Reply:
        if self._too_frequent("status", ctx):
            return Reply.json(_result(status=1, message="request too frequently"))
        with self._cond:
            answer = self.state["status"] or self.state["agentStatus"]
        return Reply.json(_result(answer))

    def _ep_heartbeat(self, ctx: "_Call") -> Reply:
        if self._too_frequent("heartbeat", ctx):
            return Reply.json(_result(status=1, message="request too frequently"))
        with self._cond:
            data = self._heartbeat_answer(ctx.json, self.state["pascalCaseKeys"])
        return Reply.json(_result(data))

    def _heartbeat_answer(self, req: dict, pascal: bool) -> dict:
        """The newHeartbeat logic (side effects included); returns the answer data.

        pascal: AgentStatus/ParallelTaskCount keys (legacy endpoint only).
        """
        with self._cond:
            st = self.state
            self._last_heartbeat = req
            if st["agentStatus"] == "IMPORT_EXCEPTION":
                st["agentStatus"] = "IMPORT_OK"
            if st["parallelTaskCount"] is None:
                st["parallelTaskCount"] = req["parallelTaskCount"]
            if st["dockerParallelTaskCount"] is None:
                st["dockerParallelTaskCount"] = req.get("dockerParallelTaskCount") or 0
            status_key, count_key = (("AgentStatus", "ParallelTaskCount") if pascal
                                     else ("agentStatus", "parallelTaskCount"))
            data = {
                "masterVersion": req["masterVersion"],
                "slaveVersion": st["slaveVersion"],
                status_key: st["agentStatus"],
                count_key: st["parallelTaskCount"],
                "envs": st["envs"],
                "gateway": st["gateway"],
                "fileGateway": st["fileGateway"],
                "props": st["props"],
                "dockerParallelTaskCount": st["dockerParallelTaskCount"],
                "language": st["language"],
                "createMod": st["createMod"],
            }
            self._cond.notify_all()
            return {k: v for k, v in data.items() if v is not None}

    def _ep_upgrade_new(self, ctx: "_Call") -> Reply:
        items, status = self._upgrade_answer(ctx.json)
        return Reply.json(_result(items, agentStatus=status))

    def _upgrade_answer(self, req: dict) -> tuple[dict, str]:
        """The upgradeNew decision (sets the "upgrading" mark); (UpgradeItem, status)."""
        with self._cond:
            cfg = self._upgrade
            status = cfg.get("agentStatus") or self.state["agentStatus"]
            items = dict.fromkeys(UPGRADE_ITEMS, False)
            if status == "IMPORT_OK":
                for item in UPGRADE_ITEMS:
                    items[item] = bool(cfg.get(item, False))
                if cfg.get("agentVersion") is not None:
                    items["agent"] = req.get("goAgentVersion") != cfg["agentVersion"]
                if cfg.get("workerVersion") is not None:
                    items["worker"] = req.get("workerVersion") != cfg["workerVersion"]
                if cfg.get("jdkVersion") is not None:
                    jdk = req.get("jdkVersion") or []
                    items["jdk"] = (not jdk or (len(jdk) > 2
                                                and jdk[2].strip() != cfg["jdkVersion"]))
                if cfg.get("dockerInitFileMd5") is not None:
                    info = req.get("dockerInitFileInfo") or {}
                    items["dockerInitFile"] = (bool(info.get("needUpgrade"))
                                               and info.get("fileMd5") != cfg["dockerInitFileMd5"])
            if items["agent"] or items["worker"] or items["jdk"]:
                self._upgrading_until = time.monotonic() + float(self.state["upgradingSeconds"])
        return items, status

    def _ep_download(self, ctx: "_Call") -> Reply:
        name = ctx.query.get("file")
        if not name:
            self._violation(ctx, "query", "download without file=")
            return Reply(code=404, content_type=None)
        with self._cond:
            deleted = self.state["agentStatus"] == "DELETE"
            spec = self._files.get(name)
        if deleted or spec is None:
            return Reply(code=404, content_type=None)
        if spec.get("redirect"):
            return Reply(code=spec["redirect_code"], content_type=None,
                         headers={"Location": spec["redirect"]})
        if ctx.query.get("eTag") == spec["md5"]:
            return Reply(code=304, content_type=None)
        headers = {"Content-Disposition": f"attachment; filename = {os.path.basename(name)}"}
        md5_header = spec["md5"] if spec["md5_header"] is None else spec["md5_header"]
        if md5_header:
            headers["X-Checksum-Md5"] = md5_header
        content = spec["content"]
        reply = Reply(code=200, body=content, content_type="application/octet-stream",
                      headers=headers)
        if spec["stall"] is not None or spec["truncate"]:
            reply.send_bytes = len(content) // 2
            reply.stall = float(spec["stall"] or 0)
        if spec.get("endless"):
            block = (content or b"x") * max(1, 65536 // max(1, len(content)))

            def forever(stop):
                sent = 0        # bounded all the same: the test machine's disk
                while not stop.is_set() and sent < ENDLESS_BOUND:
                    sent += len(block)
                    yield block
            reply.stream, reply.length = forever, False
        elif spec.get("trickle"):
            interval = 1.0 / float(spec["trickle"])

            def slowly(stop):
                for i in range(len(content)):
                    if stop.wait(interval):
                        return
                    yield content[i:i + 1]
            reply.stream = slowly
        return reply

    def _ep_upgrade_finish(self, ctx: "_Call") -> Reply:
        raw = ctx.query.get("success")
        if raw not in ("true", "false"):
            self._violation(ctx, "query", f"success= must be true or false, got {raw!r}")
        with self._cond:
            self._upgrade_finishes.append({"t": time.time(), "success": raw == "true", "raw": raw})
            self._upgrading_until = 0.0
            status = self.state["agentStatus"]
            self._cond.notify_all()
        return Reply.json(_result(True, agentStatus=status))

    def _ep_build_pull(self, ctx: "_Call") -> Reply:
        build_type = ctx.query.get("buildType")
        if build_type not in BUILD_TYPES:
            self._violation(ctx, "query",
                            f"buildType must be one of {BUILD_TYPES}, got {build_type!r}")
            build_type = "ALL"
        status, data = self._take_build(build_type)
        if status == "DELETE":
            return Reply.json(_result(agentStatus="DELETE"))
        if status != "IMPORT_OK":
            return Reply.json(_result(status=404, message=f"agent status is {status}",
                                      data="agent not ready"), 404)
        return Reply.json(_result(data, agentStatus=status))

    def _take_build(self, build_type: str) -> tuple[str, object]:
        """Hand out the first queued build of build_type: (agent status, data or None).

        Nothing is handed out unless the status is IMPORT_OK, nor while the
        agent is "upgrading". The build is registered as running.
        """
        with self._cond:
            status = self.state["agentStatus"]
            if status != "IMPORT_OK" or self._upgrading_until > time.monotonic():
                return status, None
            for i, entry in enumerate(self._queued):
                is_docker = "raw" not in entry and entry["data"].get("dockerBuildInfo") is not None
                if build_type == "ALL" or (build_type == "DOCKER") == is_docker:
                    del self._queued[i]
                    break
            else:
                return status, None
            entry["pulledAt"] = time.time()
            self._pulled.append(entry)
            # Like the server, whatever was handed out with usable ids runs.
            key = self._build_key(entry.get("data", entry.get("raw")))
            if key is not None:
                self._running[key] = entry
            self._cond.notify_all()
        return status, (entry["raw"] if "raw" in entry else entry["data"])

    def _ep_build_finish(self, ctx: "_Call") -> Reply:
        body = dict(ctx.json, t=time.time())
        with self._cond:
            self._finished.append(body)
            self._running.pop(self._build_key(body), None)
            self._cond.notify_all()
        return Reply.json(_result(True))

    def _ep_pipelines_get(self, ctx: "_Call") -> Reply:
        if self._too_frequent("pipelines", ctx):
            return Reply.json(_result(status=1, message="request too frequently"))
        return Reply.json(_result(self._next_pipeline()))

    def _next_pipeline(self):
        """Serve the first pending pipeline item: its data, or None."""
        with self._cond:
            if not self._pipelines:
                return None
            item = self._pipelines[0]
            item["served"] += 1
            if item["maxServes"] is not None and item["served"] >= item["maxServes"]:
                self._pipelines.pop(0)
            self._cond.notify_all()
            return item["data"]

    def _ep_ask(self, ctx: "_Call") -> Reply:
        """POST .../ask: one answer holding the heartbeat, build, upgrade and pipeline parts.

        Like `ask` in bk-ci's dispatch service ThirdPartyAgentService.kt: each part is the
        legacy endpoint's logic without its own rate limit; empty parts are
        absent; no part at all answers "data is null". Parts are computed in
        the order heartbeat, build, upgrade, pipeline, so a build and an
        upgrade offer can arrive in the same answer (the real server runs
        them in parallel). The image-debug part is never produced.
        """
        req = ctx.json
        enable = req["askEnable"]
        upgrade_req = req.get("upgrade")
        if enable["upgrade"] and upgrade_req is None:
            self._violation(ctx, "body", "$.upgrade: null while askEnable.upgrade is true "
                                         "(the upgrade part is skipped)")
        elif not enable["upgrade"] and upgrade_req is not None:
            self._violation(ctx, "body", "$.upgrade: must be null while askEnable.upgrade is "
                                         "false (ignored)")
        if self._too_frequent("ask", ctx):
            return Reply.json(_result(status=1, message="request too frequently"))
        with self._cond:
            bad = self._take_ask_corruptions()
            skip = set(bad) if "data" not in bad else set(ASK_PARTS)
            heartbeat = self._heartbeat_answer(req["heartbeat"], pascal=False)
            parts = {"heartbeat": heartbeat}
            if enable["build"] != "NONE" and "build" not in skip:
                parts["build"] = self._take_build(enable["build"])[1]
            if enable["upgrade"] and upgrade_req is not None and "upgrade" not in skip:
                parts["upgrade"] = self._upgrade_answer(upgrade_req)[0]
            if enable["pipeline"] and "pipeline" not in skip:
                parts["pipeline"] = self._next_pipeline()
        parts.update((k, v) for k, v in bad.items() if k in ("heartbeat", "build", "upgrade",
                                                             "pipeline"))
        data = {k: v for k, v in parts.items() if v is not None}
        status = heartbeat["agentStatus"] if data.get("heartbeat") is not None else None
        if "agentStatus" in bad:
            status = bad["agentStatus"]
        if "data" in bad:
            return Reply.json(_result(bad["data"], agentStatus=status))
        if not data:
            return Reply.json(_result(status=1, message="data is null"))
        return Reply.json(_result(data, agentStatus=status))

    def _take_ask_corruptions(self) -> dict:
        """Count down every corrupt_ask() rule once; {part: value} for this answer."""
        with self._cond:
            out = {}
            for part, rule in list(self._ask_corruptions.items()):
                out[part] = rule["value"]
                if rule["count"] > 0:
                    rule["count"] -= 1
                    if rule["count"] == 0:
                        del self._ask_corruptions[part]
            return out

    def _ep_pipelines_put(self, ctx: "_Call") -> Reply:
        update = dict(ctx.json, t=time.time())
        found = False
        with self._cond:
            self._pipeline_updates.append(update)
            if update["status"] != "PENDING":
                for item in self._pipelines:
                    if item["seqId"] == update["seqId"]:
                        self._pipelines.remove(item)
                        found = True
                        break
            else:
                found = any(i["seqId"] == update["seqId"] for i in self._pipelines)
            self._cond.notify_all()
        return Reply.json(_result(found))

    def _ep_metrix(self, ctx: "_Call") -> Reply:
        with self._cond:
            self._metrix.append({"t": time.time(), "path": ctx.path, "query": ctx.query,
                                 "body": ctx.text})
            self._cond.notify_all()
        if ctx.path.endswith("/agents/metrics"):
            return Reply.json(_result(True))
        return Reply(code=204, content_type=None)   # what InfluxDB /write answers

    def _ep_shutdown(self, ctx: "_Call") -> Reply:
        with self._cond:
            return Reply.json(_result(self.state["agentStatus"]))

    def _ep_logs(self, ctx: "_Call") -> Reply:
        color = {"": None, "/red": "red", "/yellow": "yellow", "/multi": None}[ctx.path[len(LOGS):]]
        messages = ctx.json if isinstance(ctx.json, list) else [ctx.json]
        with self._cond:
            for msg in messages:
                self._logs.append({"t": time.time(),
                                   "buildId": ctx.headers.get("x-devops-build-id"),
                                   "vmSeqId": ctx.headers.get("x-devops-vm-sid"),
                                   "color": color, "message": msg["message"], "body": msg})
            self._cond.notify_all()
        return Reply.json(_result(True))

    def _ep_worker_steps(self, ctx: "_Call") -> Reply:
        key = (ctx.query.get("buildId", ""), ctx.query.get("vmSeqId", ""))
        with self._cond:
            entry = self._known.get(key)
        if entry is None:
            return Reply.json(_result(status=404, message=f"unknown build {key}"), 404)
        return Reply.json(_result({"script": entry["script"]}))

    def _ep_worker_docker_build(self, ctx: "_Call") -> Reply:
        entry = self._docker_entry(ctx.headers)
        if entry is None:
            return Reply.json(_result(status=404, message="not a docker build's credentials"), 404)
        data = {k: v for k, v in entry["data"].items() if k != "dockerBuildInfo"}
        return Reply.json(_result(data))

    def _ep_worker_end(self, ctx: "_Call") -> Reply:
        with self._cond:
            self._worker_ends.append(dict(ctx.json, t=time.time()))
            self._cond.notify_all()
        return Reply.json(_result(True))

    # ----- faults ---------------------------------------------------------------

    def _fault_reply(self, fault: Fault, ctx: "_Call") -> Reply:
        mode = fault.mode
        if mode in ("close", "down"):
            return Reply.dropped()
        if mode == "stall":
            self._stopping.wait(fault.seconds)
            return self._route(ctx)
        if mode == "late":
            reply = self._route(ctx)
            self._stopping.wait(fault.seconds)
            return reply
        if mode == "500":
            return Reply.json(_result(status=500, message="fakeci: injected internal error",
                                      data="java.lang.RuntimeException: injected"), 500)
        if mode == "html":
            page = ("<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
                    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
                    "</body>\r\n</html>\r\n")
            return Reply(code=502, body=page.encode(), content_type="text/html")
        if mode == "garbage":
            return Reply(body=b"\x89PNG\r\n\x1a\n\x00\xff\xfe fakeci garbage {not json",
                         content_type="application/json")
        if mode == "truncated":
            full = _dumps(_result({"projectId": self.project_id, "buildId": _hex_id("b-"),
                                   "vmSeqId": "1", "workspace": "", "padding": "x" * 200},
                                  agentStatus="IMPORT_OK"))
            half = full[:len(full) // 2]
            if fault.variant == "close":
                return Reply(body=full, send_bytes=len(half))
            return Reply(body=half)
        if mode == "wrongtype":
            return Reply.json(self._wrongtype_body(ctx.path, fault.variant))
        if mode == "huge":
            if self._huge is None:
                self._huge = b'{"status":0,"data":"' + b"A" * HUGE_BODY_BYTES + b'"}'
            return Reply(body=self._huge)
        if mode == "json":
            if fault.raw is not None:
                return Reply(body=fault.raw.encode())
            return Reply.json(fault.body)
        if mode == "redirect":
            return Reply(code=fault.code, body=b"", content_type=None,
                         headers={"Location": fault.location or "/"})
        raise AssertionError(mode)

    @staticmethod
    def _wrongtype_body(path: str, variant: str | None) -> dict:
        """A well-formed envelope whose fields have the wrong JSON types."""
        if variant == "status":
            return {"status": "0", "message": 7, "agentStatus": "IMPORT_OK", "data": None}
        if path.endswith("/agents/newHeartbeat"):
            data = {"agentStatus": 2, "parallelTaskCount": "4", "envs": ["A=B"], "gateway": 17,
                    "fileGateway": [], "props": {"keepLogsHours": "72", "ignoreLocalIps": 1},
                    "dockerParallelTaskCount": "two", "language": False}
            return {"status": 0, "data": data}
        if path.endswith("/upgradeNew"):
            return {"status": 0, "agentStatus": 2,
                    "data": {"agent": "true", "worker": 1, "jdk": [], "dockerInitFile": "no"}}
        if path == DISPATCH + "/startup":
            return {"status": 0, "agentStatus": 2,
                    "data": {"projectId": 1, "buildId": ["b-1"], "vmSeqId": 1, "workspace": {},
                             "pipelineId": 5, "executeCount": "1", "containerHashId": False}}
        if path.endswith("/agents/pipelines"):
            return {"status": 0, "data": {"type": "COMMAND", "seqId": 42, "command": ["ls"]}}
        if path.endswith(("/status", "/startup", "/shutdown")):
            return {"status": 0, "data": 2}
        if path.endswith("/ask"):
            parts = {name: FakeCI._wrongtype_body(suffix, None)["data"]
                     for name, suffix in (("heartbeat", "/agents/newHeartbeat"),
                                          ("build", DISPATCH + "/startup"),
                                          ("upgrade", "/upgradeNew"),
                                          ("pipeline", "/agents/pipelines"))}
            return {"status": 0, "agentStatus": 2, "data": parts}
        return {"status": 0, "agentStatus": 2, "data": {"unexpected": [1, 2]}}

    # ----- admin API ------------------------------------------------------------

    def _admin(self, method: str, path: str, query: dict, body: bytes) -> Reply:
        try:
            payload = json.loads(body) if body.strip() else {}
        except ValueError as exc:
            return Reply.json({"error": f"bad JSON: {exc}"}, 400)
        handler = ADMIN_ROUTES.get((method, path))
        if handler is None:
            return Reply.json({"error": f"no admin endpoint {method} {path}"}, 404)
        try:
            result = handler(self, query, payload)
        except (ValueError, TypeError, KeyError) as exc:
            return Reply.json({"error": str(exc)}, 400)
        return result if isinstance(result, Reply) else Reply.json(result)

    def _admin_wait(self, query: dict, _payload) -> Reply:
        what = query.get("what", "finished")
        count = int(query.get("count", 1))
        timeout = min(float(query.get("timeout", 10)), 600.0)
        if what not in COUNTABLE:
            raise ValueError(f"what must be one of {COUNTABLE}")
        ok = self.wait_for(what, count, timeout, query.get("path_contains"))
        now = self.count(what, query.get("path_contains"))
        return Reply.json({"ok": ok, "what": what, "count": now}, 200 if ok else 408)

    def _admin_add_file(self, _query: dict, p: dict) -> dict:
        if "content_b64" in p:
            content = base64.b64decode(p["content_b64"], validate=True)
        elif "text" in p:
            content = p["text"].encode()
        else:
            raise ValueError("give content_b64 or text")
        return self.add_file(p["name"], content, md5=p.get("md5"), stall=p.get("stall"),
                             truncate=p.get("truncate", False),
                             endless=p.get("endless", False), trickle=p.get("trickle"),
                             redirect=p.get("redirect"),
                             redirect_code=p.get("redirect_code", 302))

    def _admin_add_faults(self, _query: dict, p) -> list:
        for rule in (p if isinstance(p, list) else [p]):
            rule = dict(rule)
            self.add_fault(rule.pop("path_contains"), rule.pop("mode"), rule.pop("count", 1),
                           **rule)
        return self.faults()

    def _admin_corrupt_ask(self, _query: dict, p) -> list:
        for rule in (p if isinstance(p, list) else [p]):
            self.corrupt_ask(rule["part"], rule["value"], rule.get("count", 1))
        return self.ask_corruptions()

    def _admin_queue_pipeline(self, _query: dict, p: dict) -> dict:
        return self.queue_pipeline(command=p.get("command"), seq_id=p.get("seqId"),
                                   data=p.get("data"), max_serves=p.get("maxServes"))


def _filter_lists(name: str):
    def get(ci: FakeCI, query: dict, _payload):
        items = getattr(ci, name)
        build = query.get("buildId")
        if build is not None:
            items = [i for i in items if i.get("buildId") == build]
        return items
    return get


ADMIN_ROUTES = {
    ("GET", "/admin/ping"): lambda ci, q, p: {"ok": True, "port": ci.port},
    ("POST", "/admin/reset"): lambda ci, q, p: ci.reset() or {"ok": True},
    ("GET", "/admin/state"): lambda ci, q, p: ci.get_state(),
    ("POST", "/admin/state"): lambda ci, q, p: ci.set_state(**p),
    ("POST", "/admin/builds"): lambda ci, q, p: ci.queue_build(**p),
    ("GET", "/admin/builds"): lambda ci, q, p: ci.builds(),
    ("GET", "/admin/requests"):
        lambda ci, q, p: ci.requests(q.get("path_contains"), q.get("method")),
    ("GET", "/admin/finished"): _filter_lists("finished"),
    ("GET", "/admin/violations"): lambda ci, q, p: ci.violations,
    ("POST", "/admin/pipelines"): FakeCI._admin_queue_pipeline,
    ("GET", "/admin/pipelines"): lambda ci, q, p: ci.pipelines(),
    ("GET", "/admin/pipeline_updates"): lambda ci, q, p: ci.pipeline_updates,
    ("POST", "/admin/upgrade"): lambda ci, q, p: ci.set_upgrade(**p),
    ("POST", "/admin/files"): FakeCI._admin_add_file,
    ("DELETE", "/admin/files"): lambda ci, q, p: ci.remove_file(q["name"]) or {"ok": True},
    ("GET", "/admin/upgrade_finishes"): lambda ci, q, p: ci.upgrade_finishes,
    ("POST", "/admin/faults"): FakeCI._admin_add_faults,
    ("GET", "/admin/faults"): lambda ci, q, p: ci.faults(),
    ("DELETE", "/admin/faults"): lambda ci, q, p: ci.clear_faults() or {"ok": True},
    ("POST", "/admin/down"):
        lambda ci, q, p: ci.set_down(p.get("down", True)) or {"down": ci.is_down},
    ("GET", "/admin/metrix"): lambda ci, q, p: ci.metrix,
    ("GET", "/admin/logs"): _filter_lists("logs"),
    ("GET", "/admin/worker_ends"): _filter_lists("worker_ends"),
    ("GET", "/admin/wait"): FakeCI._admin_wait,
    ("GET", "/admin/asks"): lambda ci, q, p: ci.asks(),
    ("GET", "/admin/rate_limited"): lambda ci, q, p: ci.rate_limited,
    ("POST", "/admin/ask_corruptions"): FakeCI._admin_corrupt_ask,
    ("GET", "/admin/ask_corruptions"): lambda ci, q, p: ci.ask_corruptions(),
    ("DELETE", "/admin/ask_corruptions"):
        lambda ci, q, p: ci.clear_ask_corruptions() or {"ok": True},
}


# --------------------------------------------------------------------------
# Routing table for agent-facing endpoints
# --------------------------------------------------------------------------

@dataclass
class _Call:
    """One decoded agent-side request."""
    method: str
    path: str
    url: str
    query: dict
    headers: dict
    body: bytes
    text: str = ""
    json: object = None
    json_error: str | None = None

    def __post_init__(self):
        body = self.body
        if self.headers.get("content-encoding", "").lower() == "gzip" and body:
            try:
                body = gzip.decompress(body)
            except OSError:
                pass
        self.text = body.decode("utf-8", errors="replace")
        if self.text.strip():
            try:
                self.json = json.loads(self.text)
            except ValueError as exc:
                self.json_error = str(exc)
        else:
            self.json_error = "empty body"


def _auth_fail_401(_ci, _ctx, message):
    return Reply.json(_result(status=401, message=message), 401)


def _auth_fail_404(_ci, _ctx, message):
    return Reply.json(_result(status=404, message=message, data="agent not found"), 404)


def _auth_fail_empty_404(_ci, _ctx, _message):
    return Reply(code=404, content_type=None)


def _auth_fail_upgrade_new(_ci, _ctx, _message):
    return Reply.json(_result(dict.fromkeys(UPGRADE_ITEMS, False), agentStatus="DELETE"))


def _auth_fail_upgrade_finish(_ci, _ctx, _message):
    return Reply.json(_result(False, agentStatus="IMPORT_EXCEPTION"))


def _auth_fail_ask(_ci, ctx, _message):
    # Secret mismatch: the heartbeat and build parts throw; the upgrade part
    # answers all false without a status (ThirdPartyAgentService.ask).
    req = ctx.json if isinstance(ctx.json, dict) else {}
    enable = req.get("askEnable") if isinstance(req.get("askEnable"), dict) else {}
    if enable.get("upgrade") is True and req.get("upgrade") is not None:
        return Reply.json(_result({"upgrade": dict.fromkeys(UPGRADE_ITEMS, False)}))
    return Reply.json(_result(status=1, message="data is null"))


def _gate_ask(ci, _ctx):
    # A server without /ask: Jersey's 404 before any auth or body check.
    with ci._cond:
        supported = ci.state["askSupported"]
    return None if supported else Reply.json(PRE_ASK_404, 404)


@dataclass
class _Route:
    handler: object
    schema: object = None          # request body schema (implies JSON + Content-Type)
    auth: str = "agent"            # "agent", "log" (gateway rules) or "none"
    auth_fail: object = _auth_fail_401
    gate: object = None            # (ci, ctx) -> Reply or None, before every check


ROUTES = {
    ENV + "/startup": {"POST": _Route(FakeCI._ep_startup, AGENT_START_INFO)},
    ENV + "/status": {"GET": _Route(FakeCI._ep_status)},
    ENV + "/agents/newHeartbeat": {"POST": _Route(FakeCI._ep_heartbeat, HEARTBEAT_INFO)},
    DISPATCH + "/upgradeNew": {"POST": _Route(FakeCI._ep_upgrade_new, UPGRADE_BY_VERSION_INFO,
                                              auth_fail=_auth_fail_upgrade_new)},
    ENV + "/upgrade/files/download": {"GET": _Route(FakeCI._ep_download,
                                                    auth_fail=_auth_fail_empty_404)},
    DISPATCH + "/upgrade": {"DELETE": _Route(FakeCI._ep_upgrade_finish,
                                             auth_fail=_auth_fail_upgrade_finish)},
    DISPATCH + "/startup": {"GET": _Route(FakeCI._ep_build_pull, auth_fail=_auth_fail_404)},
    ASK: {"POST": _Route(FakeCI._ep_ask, ASK_INFO, auth_fail=_auth_fail_ask, gate=_gate_ask)},
    DISPATCH + "/workerBuildFinish": {"POST": _Route(FakeCI._ep_build_finish, BUILD_WITH_STATUS,
                                                     auth_fail=_auth_fail_404)},
    ENV + "/agents/pipelines": {"GET": _Route(FakeCI._ep_pipelines_get),
                                "PUT": _Route(FakeCI._ep_pipelines_put, PIPELINE_RESPONSE)},
    ENV + "/agents/metrix": {"POST": _Route(FakeCI._ep_metrix, auth="none")},
    ENV + "/agents/metrix/write": {"POST": _Route(FakeCI._ep_metrix, auth="none")},
    ENV + "/agents/metrics": {"POST": _Route(FakeCI._ep_metrix)},
    ENV + "/shutdown": {"POST": _Route(FakeCI._ep_shutdown)},
    LOGS: {"POST": _Route(FakeCI._ep_logs, LOG_MESSAGE, auth="log")},
    LOGS + "/red": {"POST": _Route(FakeCI._ep_logs, LOG_MESSAGE, auth="log")},
    LOGS + "/yellow": {"POST": _Route(FakeCI._ep_logs, LOG_MESSAGE, auth="log")},
    LOGS + "/multi": {"POST": _Route(FakeCI._ep_logs, _arr(LOG_MESSAGE), auth="log")},
    WORKER + "/steps": {"GET": _Route(FakeCI._ep_worker_steps, auth="worker")},
    WORKER + "/end": {"POST": _Route(FakeCI._ep_worker_end, WORKER_END, auth="worker")},
    WORKER + "/docker_build": {"GET": _Route(FakeCI._ep_worker_docker_build, auth="worker")},
}


# --------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"      # keep-alive, like the real gateway
    server_version = "fakeci/1.0"
    sys_version = ""
    timeout = 120                      # idle keep-alive connections are dropped

    def setup(self):
        super().setup()
        self.server.track(self.connection, True)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def do_GET(self):
        self._serve()

    do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_GET

    def log_message(self, format, *args):  # noqa: A002 - signature is inherited
        pass

    def _serve(self):
        try:
            body = self._read_body()
        except ValueError as exc:
            self._send(Reply.json({"status": 400, "message": f"bad request body: {exc}"}, 400))
            self.close_connection = True
            return
        headers = {}
        for name, value in self.headers.items():
            name = name.lower()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        reply = self.server.fakeci.handle(self.command, self.path, headers, body)
        if reply.record is not None:    # lean mode: request bytes as they came
            reply.record["rx"] = (len(self.raw_requestline) + len(self.headers.as_bytes())
                                  + len(body))
        self._send(reply)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks, total = [], 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY:
                    raise ValueError("body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0 or length > MAX_BODY:
            raise ValueError("bad Content-Length")
        return self.rfile.read(length) if length else b""

    def _send(self, reply: Reply) -> None:
        try:
            if reply.close:
                self._drop()
                return
            self.send_response(reply.code)
            if reply.content_type:
                self.send_header("Content-Type", reply.content_type)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            if reply.stream is not None:
                self._send_stream(reply)
                return
            if reply.code not in (204, 304):
                self.send_header("Content-Length", str(len(reply.body)))
            if reply.record is not None:    # lean mode: response bytes (+ blank line)
                reply.record["tx"] = sum(map(len, self._headers_buffer)) + 2 + (
                    len(reply.body) if reply.code not in (204, 304) else 0)
            self.end_headers()
            payload = reply.body if reply.send_bytes is None else reply.body[:reply.send_bytes]
            if self.command != "HEAD" and reply.code not in (204, 304):
                self.wfile.write(payload)
            self.wfile.flush()
            if reply.send_bytes is not None:
                self.server.fakeci._stopping.wait(reply.stall)
                self._drop()
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            self.close_connection = True

    def _send_stream(self, reply: Reply) -> None:
        """Headers, then reply.stream's chunks as they come; then close."""
        if reply.length:
            self.send_header("Content-Length", str(len(reply.body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.flush()
        for chunk in reply.stream(self.server.fakeci._stopping):
            self.wfile.write(chunk)
            self.wfile.flush()
        self._drop()

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 512           # a fleet reconnecting at once (socketserver: 5)

    def __init__(self, fakeci: FakeCI, port: int):
        self.fakeci = fakeci
        self._conns: set = set()
        self._conns_lock = threading.Lock()
        super().__init__((HOST, port), _Handler)

    def handle_error(self, request, client_address) -> None:
        # An agent that went away mid-request is no error of the server.
        if not isinstance(sys.exc_info()[1], (ConnectionError, socket.timeout)):
            super().handle_error(request, client_address)

    def track(self, conn, add: bool) -> None:
        with self._conns_lock:
            (self._conns.add if add else self._conns.discard)(conn)

    def wait_idle(self, timeout: float) -> bool:
        """True once no connection is being handled, False after timeout s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._conns_lock:
                if not self._conns:
                    return True
            time.sleep(0.01)
        return False

    def close_all_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------

def _write_atomically(path: str, text: str) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fake BK-CI server for GoAgent tests "
                                                 "(listens on 127.0.0.1 only).")
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one")
    parser.add_argument("--project-id", required=True)
    parser.add_argument("--agent-id", required=True)
    parser.add_argument("--secret-key", required=True)
    parser.add_argument("--state-dir", help="append requests.jsonl / violations.jsonl here")
    parser.add_argument("--port-file", help="write the chosen port here (atomically)")
    parser.add_argument("--verbose", action="store_true", help="print every request")
    args = parser.parse_args(argv)

    ci = FakeCI(args.project_id, args.agent_id, args.secret_key, port=args.port,
                state_dir=args.state_dir, verbose=args.verbose).start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    if args.port_file:
        _write_atomically(args.port_file, f"{ci.port}\n")
    print(f"fakeci listening on {HOST}:{ci.port}", flush=True)
    while not stop.wait(1.0):
        pass
    ci.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
