"""Self-tests of the test infrastructure: fakeci server and the java stand-in.

These need no C binary. They talk to fakeci with urllib, the way the agent
would, and run tests/fakeci/java the way the agent starts it.
"""

import base64
import hashlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import (JAVA_STANDIN, TESTS_DIR, WORKER_VERSION, agent_env, kill_leftovers,
                      processes_in, read_properties, wait_until)
from fakeci.server import ASK, DISPATCH, ENV, HEARTBEAT_INFO, LOGS, WORKER, check_shape

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
JSON_CT = "application/json; charset=utf-8"

STATUS = ENV + "/status"
STARTUP = ENV + "/startup"
HEARTBEAT = ENV + "/agents/newHeartbeat"
PULL = DISPATCH + "/startup?buildType="
FINISH = DISPATCH + "/workerBuildFinish"
PIPELINES = ENV + "/agents/pipelines"
DOWNLOAD = ENV + "/upgrade/files/download?file="

HEARTBEAT_BODY = {
    "masterVersion": "v1.12.0-beta.39", "slaveVersion": "v1.15.2", "hostName": "build-linux-07",
    "agentIp": "10.12.34.56", "parallelTaskCount": 4, "agentInstallPath": "/data/bkci/agent",
    "startedUser": "bkci", "taskList": None,
    "props": {"arch": "amd64", "jdkVersion": ["a", "b", "c"],
              "dockerInitFileMd5": {"fileMd5": "", "needUpgrade": False}},
    "dockerParallelTaskCount": 4, "dockerTaskList": [], "errorExitData": None,
}


class Response:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)


def call(ci, method, path, body=None, headers=None, auth=True, timeout=10.0, raw=None):
    """One HTTP call like the agent makes it; returns Response (any HTTP status)."""
    hdrs = dict(ci.auth_headers()) if auth else {}
    data = raw
    if body is not None:
        data = json.dumps(body).encode()
        hdrs["Content-Type"] = JSON_CT
    hdrs.update(headers or {})
    req = urllib.request.Request(ci.url + path, data=data, headers=hdrs, method=method)
    try:
        with OPENER.open(req, timeout=timeout) as resp:
            return Response(resp.status, resp.headers, resp.read())
    except urllib.error.HTTPError as err:
        return Response(err.code, err.headers, err.read())


def admin(ci, method, path, body=None, timeout=10.0):
    """Call the admin API over HTTP; returns (status, decoded JSON)."""
    resp = call(ci, method, "/admin/" + path, body=body, auth=False, timeout=timeout)
    return resp.status, resp.json()


def pull(ci, build_type="ALL"):
    return call(ci, "GET", PULL + build_type).json()


def finish_body(build, success=True):
    keys = ("projectId", "buildId", "vmSeqId", "workspace", "pipelineId", "executeCount",
            "containerHashId")
    body = {k: build[k] for k in keys}
    body.update(dockerBuildInfo=None, success=success, message="worker exited", error=None)
    return body


# ------------------------------------------------------------ authentication

def test_valid_call_records_request(fakeci):
    resp = call(fakeci, "GET", STATUS)
    assert resp.status == 200 and resp.json() == {"status": 0, "data": "IMPORT_OK"}
    [req] = fakeci.requests(path_contains="/status")
    assert req["method"] == "GET" and req["path"] == STATUS
    assert req["headers"]["x-devops-agent-id"] == fakeci.agent_id
    assert req["body"] == "" and req["json"] is None and req["status"] == 200
    assert fakeci.violations == []


@pytest.mark.parametrize("header,value", [
    ("X-DEVOPS-AGENT-SECRET-KEY", "wrong"),
    ("X-DEVOPS-PROJECT-ID", "other-proj"),
    ("X-DEVOPS-AGENT-ID", "other-agent"),
    ("X-DEVOPS-BUILD-TYPE", "WORKER"),
])
def test_wrong_auth_header_is_rejected(fakeci, header, value):
    resp = call(fakeci, "GET", STATUS, headers={header: value})
    assert resp.status == 401 and resp.json()["status"] == 401
    [violation] = fakeci.violations
    assert violation["kind"] == "auth" and header.lower() in violation["message"]


def test_missing_auth_headers_are_rejected(fakeci):
    resp = call(fakeci, "POST", HEARTBEAT, body=HEARTBEAT_BODY, auth=False)
    assert resp.status == 401
    assert fakeci.violations[0]["message"].count("missing") == 4


def test_auth_header_names_are_case_insensitive(fakeci):
    headers = {k.lower(): v for k, v in fakeci.auth_headers().items()}
    resp = call(fakeci, "GET", STATUS, headers=headers, auth=False)
    assert resp.status == 200 and fakeci.violations == []


def test_dispatch_and_download_auth_failures_follow_the_real_server(fakeci):
    bad = {"X-DEVOPS-AGENT-SECRET-KEY": "nope"}
    assert call(fakeci, "GET", PULL + "ALL", headers=bad).status == 404
    upgrade = call(fakeci, "POST", DISPATCH + "/upgradeNew", body={}, headers=bad).json()
    assert upgrade["agentStatus"] == "DELETE" and not any(upgrade["data"].values())
    fakeci.add_file("jar/worker-agent.jar", b"v9.9.9\n")
    resp = call(fakeci, "GET", DOWNLOAD + "jar/worker-agent.jar", headers=bad)
    assert resp.status == 404 and resp.body == b""


def test_metrix_is_unauthenticated_and_stored_raw(fakeci):
    line = "cpu,agentId=a,projectId=p usage_idle=93.1 1717000000000000000\n"
    resp = call(fakeci, "POST", ENV + "/agents/metrix/write?db=agentMetrix", auth=False,
                raw=line.encode(), headers={"Content-Type": "text/plain; charset=utf-8"})
    assert resp.status == 204
    [entry] = fakeci.metrix
    assert entry["body"] == line and entry["query"] == {"db": "agentMetrix"}
    assert fakeci.violations == []


# --------------------------------------------------------------- body shapes

def test_heartbeat_with_valid_body(fakeci):
    fakeci.set_state(envs={"TOOLS_HOME": "/opt/tools"}, gateway="gw.example.com")
    resp = call(fakeci, "POST", HEARTBEAT, body=HEARTBEAT_BODY)
    data = resp.json()["data"]
    assert data["agentStatus"] == "IMPORT_OK" and data["parallelTaskCount"] == 4
    assert data["envs"] == {"TOOLS_HOME": "/opt/tools"} and data["gateway"] == "gw.example.com"
    assert "fileGateway" not in data          # null values are dropped like NON_NULL
    assert fakeci.get_state()["lastHeartbeat"] == HEARTBEAT_BODY
    assert fakeci.violations == []


def test_heartbeat_pascal_case_keys(fakeci):
    fakeci.set_state(pascalCaseKeys=True)
    data = call(fakeci, "POST", HEARTBEAT, body=HEARTBEAT_BODY).json()["data"]
    assert data["AgentStatus"] == "IMPORT_OK" and data["ParallelTaskCount"] == 4


@pytest.mark.parametrize("mutate,expect", [
    (lambda b: b.pop("hostName"), "$.hostName: required key missing"),
    (lambda b: b.update(parallelTaskCount="4"), "$.parallelTaskCount: expected int"),
    (lambda b: b.update(HostName=b.pop("hostName")), "found 'HostName'; keys are case-sensitive"),
    (lambda b: b.update(agentIp=None), "$.agentIp: required key is null"),
    (lambda b: b.update(taskList=[{"projectId": "p", "buildId": "b", "vmSeqId": 1,
                                   "workspace": ""}]), "$.taskList[0].vmSeqId: expected string"),
    (lambda b: b.update(errorExitData={"ErrorEnum": "THIRD_AGENT_EXIT_NOT_WORKER",
                                       "Message": "x"}), "$.errorExitData.errorEnum"),
    (lambda b: b["props"].pop("arch"), "$.props.arch: required key missing"),
])
def test_heartbeat_shape_violation_is_recorded(fakeci, mutate, expect):
    body = json.loads(json.dumps(HEARTBEAT_BODY))
    mutate(body)
    resp = call(fakeci, "POST", HEARTBEAT, body=body)
    assert resp.status == 400 and resp.json()["status"] == 400
    [violation] = fakeci.violations
    assert violation["kind"] == "body" and expect in violation["message"]


def test_lower_camel_error_exit_data_is_accepted(fakeci):
    body = dict(HEARTBEAT_BODY, errorExitData={"errorEnum": "THIRD_AGENT_EXIT_NOT_WORKER",
                                               "message": "worker-agent.jar missing"})
    assert call(fakeci, "POST", HEARTBEAT, body=body).status == 200
    assert fakeci.violations == []


def test_invalid_json_and_content_type_are_violations(fakeci):
    resp = call(fakeci, "POST", STARTUP, raw=b"{nope", headers={"Content-Type": JSON_CT})
    assert resp.status == 400
    resp = call(fakeci, "POST", STARTUP, raw=json.dumps({"hostname": "h", "hostIp": "1.2.3.4",
                                                         "detectOS": "linux"}).encode(),
                headers={"Content-Type": "text/plain"})
    assert resp.status == 415
    assert [v["kind"] for v in fakeci.violations] == ["body", "content-type"]


def test_check_shape_int_range_and_bool_are_strict():
    assert check_shape({"a": True}, {"a": ("int", True)}) != []
    assert check_shape({"a": 2 ** 31}, {"a": ("int", True)}) != []
    assert check_shape({"a": 2 ** 31}, {"a": ("long", True)}) == []
    assert check_shape(HEARTBEAT_BODY, HEARTBEAT_INFO) == []


def test_unknown_endpoint_is_a_violation(fakeci):
    assert call(fakeci, "GET", ENV + "/agents/heartbeatz").status == 404
    assert call(fakeci, "DELETE", STATUS).status == 405
    assert [v["kind"] for v in fakeci.violations] == ["endpoint", "endpoint"]


# ------------------------------------------------------------ startup/status

def test_startup_answers_and_flips_like_the_server(fakeci):
    body = {"hostname": "h", "hostIp": "10.0.0.1", "detectOS": "linux",
            "masterVersion": "v1", "version": ""}
    fakeci.set_state(agentStatus="IMPORT_EXCEPTION")
    assert call(fakeci, "POST", STARTUP, body=body).json()["data"] == "IMPORT_OK"
    fakeci.set_state(agentStatus="UN_IMPORT")
    assert call(fakeci, "POST", STARTUP, body=body).json()["data"] == "UN_IMPORT_OK"
    assert fakeci.get_state()["agentStatus"] == "IMPORT_OK"
    assert fakeci.get_state()["lastStartup"] == body


def test_status_override_and_rate_limit(fakeci):
    fakeci.set_state(status="UN_IMPORT_OK")
    assert call(fakeci, "GET", STATUS).json()["data"] == "UN_IMPORT_OK"
    fakeci.set_state(status=None, rateLimits=True)
    assert call(fakeci, "GET", STATUS).json()["status"] == 0
    assert call(fakeci, "GET", STATUS).json() == {"status": 1, "message": "request too frequently"}


# ------------------------------------------------------------------- builds

def test_build_queue_pop_and_finish(fakeci):
    queued = fakeci.queue_build(script="echo hi")
    assert queued["buildId"].startswith("b-") and len(queued["buildId"]) == 34
    assert queued["pipelineId"].startswith("p-") and queued["containerHashId"].startswith("c-")
    assert queued["vmSeqId"] == "1" and queued["executeCount"] == 1 and queued["workspace"] == ""

    answer = pull(fakeci)
    assert answer["agentStatus"] == "IMPORT_OK"
    assert "script" not in answer["data"]
    assert answer["data"]["buildId"] == queued["buildId"]
    assert "data" not in pull(fakeci)                      # queue is empty now
    assert [b["buildId"] for b in fakeci.builds()["running"]] == [queued["buildId"]]

    steps = call(fakeci, "GET", f"{WORKER}/steps?buildId={queued['buildId']}&vmSeqId=1").json()
    assert steps == {"status": 0, "data": {"script": "echo hi"}}

    body = finish_body(answer["data"])
    assert call(fakeci, "POST", FINISH, body=body).json() == {"status": 0, "data": True}
    assert call(fakeci, "POST", FINISH, body=body).status == 200
    assert len(fakeci.finished) == 2                       # duplicates are kept
    assert fakeci.builds()["running"] == []
    assert fakeci.violations == []


def test_build_pull_honours_build_type(fakeci):
    binary = fakeci.queue_build()
    docker = fakeci.queue_build(dockerBuildInfo={"agentId": "a", "secretKey": "s", "image": "i"})
    assert pull(fakeci, "DOCKER")["data"]["buildId"] == docker["buildId"]
    assert "data" not in pull(fakeci, "DOCKER")
    assert pull(fakeci, "BINARY")["data"]["buildId"] == binary["buildId"]
    assert [b["buildId"] for b in fakeci.pulled] == [docker["buildId"], binary["buildId"]]


def test_docker_build_credentials_for_the_worker_in_the_container(fakeci):
    docker = fakeci.queue_build(script="echo hi", dockerBuildInfo={"image": "i"})
    dbi = docker["dockerBuildInfo"]
    assert dbi["agentId"].startswith("docker-") and dbi["secretKey"]
    assert dbi["agentId"] != fakeci.agent_id
    creds = {"X-DEVOPS-AGENT-ID": dbi["agentId"], "X-DEVOPS-AGENT-SECRET-KEY": dbi["secretKey"]}
    got = call(fakeci, "GET", "/ms/fakeci/worker/docker_build", headers=creds).json()["data"]
    assert got["buildId"] == docker["buildId"] and "dockerBuildInfo" not in got
    assert call(fakeci, "GET", "/ms/fakeci/worker/docker_build").status == 404
    steps = "/ms/fakeci/worker/steps?buildId=%s&vmSeqId=1" % docker["buildId"]
    assert call(fakeci, "GET", steps, headers=creds).json()["data"]["script"] == "echo hi"
    pull(fakeci, "DOCKER")
    line = {"message": "inside", "timestamp": 1, "logType": "LOG"}
    log_headers = dict(creds, **{"X-DEVOPS-BUILD-ID": docker["buildId"], "X-DEVOPS-VM-SID": "1"})
    assert call(fakeci, "POST", LOGS, body=line, headers=log_headers).status == 200
    assert fakeci.violations == []
    # Another build's id with these credentials is refused.
    other = dict(log_headers, **{"X-DEVOPS-BUILD-ID": "b-other"})
    assert call(fakeci, "POST", LOGS, body=line, headers=other).status == 401
    wrong = {"X-DEVOPS-AGENT-ID": dbi["agentId"], "X-DEVOPS-AGENT-SECRET-KEY": "nope"}
    assert call(fakeci, "GET", steps, headers=wrong).status == 401


def test_build_pull_without_build_type_is_a_violation(fakeci):
    fakeci.queue_build()
    assert "data" in call(fakeci, "GET", DISPATCH + "/startup").json()
    assert fakeci.violations[0]["kind"] == "query"


def test_build_pull_agent_status(fakeci):
    fakeci.queue_build()
    fakeci.set_state(agentStatus="DELETE")
    assert pull(fakeci) == {"status": 0, "agentStatus": "DELETE"}
    fakeci.set_state(agentStatus="IMPORT_EXCEPTION")
    assert call(fakeci, "GET", PULL + "ALL").status == 404
    fakeci.set_state(agentStatus="IMPORT_OK")
    assert "data" in pull(fakeci)


def test_raw_build_data_is_returned_verbatim(fakeci):
    fakeci.queue_build(raw={"projectId": 1, "buildId": None})
    assert pull(fakeci)["data"] == {"projectId": 1, "buildId": None}


def test_finish_shape_is_checked(fakeci):
    fakeci.queue_build()
    body = finish_body(pull(fakeci)["data"])
    body["error"] = {"errorType": "USER", "errorMessage": "x", "errorCode": "2128040"}
    assert call(fakeci, "POST", FINISH, body=body).status == 400
    assert "$.error.errorCode: expected int" in fakeci.violations[0]["message"]
    assert fakeci.finished == []


def test_build_logs_need_a_running_build(fakeci):
    build = fakeci.queue_build()
    line = {"message": "hello", "timestamp": 1717000012345, "tag": "startVM-1",
            "jobId": "", "logType": "LOG", "executeCount": 1, "subTag": None}
    log_headers = {"X-DEVOPS-BUILD-ID": build["buildId"], "X-DEVOPS-VM-SID": "1"}
    resp = call(fakeci, "POST", LOGS, body=line, headers=log_headers)
    assert resp.status == 401 and resp.json()["data"] == "buildEnd"
    pull(fakeci)
    assert call(fakeci, "POST", LOGS + "/red", body=line, headers=log_headers).status == 200
    assert fakeci.log_messages(build["buildId"]) == ["hello"]
    assert fakeci.logs[0]["color"] == "red"
    assert [v["kind"] for v in fakeci.violations] == ["log-auth"]


# ---------------------------------------------------------------- pipelines

def test_pipeline_item_stays_pending_until_updated(fakeci):
    item = fakeci.queue_pipeline(command="df -h\nuptime", seq_id="qvzxnbml")
    assert item["seqId"] == "qvzxnbml"
    expected = {"type": "COMMAND", "seqId": "qvzxnbml", "command": "df -h\nuptime"}
    assert call(fakeci, "GET", PIPELINES).json() == {"status": 0, "data": expected}
    update = {"seqId": "qvzxnbml", "status": "EXECUTING", "response": "Executing"}
    assert call(fakeci, "PUT", PIPELINES, body=update).json()["data"] is True
    assert call(fakeci, "GET", PIPELINES).json() == {"status": 0}
    assert [u["status"] for u in fakeci.pipeline_updates] == ["EXECUTING"]
    assert fakeci.violations == []


def test_pipeline_pending_update_keeps_item_and_raw_data(fakeci):
    fakeci.queue_pipeline(data={"type": "FILE", "seqId": "f1", "operation": "DOWNLOAD",
                                "file": "/tmp/x"})
    call(fakeci, "PUT", PIPELINES, body={"seqId": "f1", "status": "PENDING", "response": ""})
    assert call(fakeci, "GET", PIPELINES).json()["data"]["type"] == "FILE"
    fakeci.reset()
    fakeci.queue_pipeline(data={"type": "COMMAND", "seqId": 7, "command": None}, max_serves=1)
    assert call(fakeci, "GET", PIPELINES).json()["data"]["seqId"] == 7
    assert call(fakeci, "GET", PIPELINES).json() == {"status": 0}


def test_pipeline_update_shape(fakeci):
    bad = {"seqId": "x", "status": "DONE", "response": ""}
    assert call(fakeci, "PUT", PIPELINES, body=bad).status == 400
    assert "$.status: expected one of" in fakeci.violations[0]["message"]


# ------------------------------------------------------------------ upgrade

def test_upgrade_answer_and_finish(fakeci):
    req = {"workerVersion": "v1.15.2", "goAgentVersion": "v1.12.0", "jdkVersion": None,
           "dockerInitFileInfo": {"fileMd5": "", "needUpgrade": False}}
    answer = call(fakeci, "POST", DISPATCH + "/upgradeNew", body=req).json()
    assert answer == {"status": 0, "agentStatus": "IMPORT_OK",
                      "data": {"agent": False, "worker": False, "jdk": False,
                               "dockerInitFile": False}}
    fakeci.set_upgrade(worker=True)
    assert call(fakeci, "POST", DISPATCH + "/upgradeNew", body=req).json()["data"]["worker"]
    fakeci.queue_build()
    assert "data" not in pull(fakeci)                 # "upgrading" for 60 s: no builds
    resp = call(fakeci, "DELETE", DISPATCH + "/upgrade?success=false")
    assert resp.json() == {"status": 0, "agentStatus": "IMPORT_OK", "data": True}
    assert [f["success"] for f in fakeci.upgrade_finishes] == [False]
    assert "data" in pull(fakeci)                     # the finish cleared the mark


def test_upgrade_answer_by_version(fakeci):
    fakeci.set_upgrade(agentVersion="v2.0.0", workerVersion="v1.15.2", jdkVersion="x")
    req = {"workerVersion": "v1.15.2", "goAgentVersion": "v1.12.0",
           "jdkVersion": ["a", "b", "x"], "dockerInitFileInfo": None}
    data = call(fakeci, "POST", DISPATCH + "/upgradeNew", body=req).json()["data"]
    assert data == {"agent": True, "worker": False, "jdk": False, "dockerInitFile": False}
    fakeci.set_upgrade(agent=True, agentStatus="IMPORT_EXCEPTION")
    answer = call(fakeci, "POST", DISPATCH + "/upgradeNew", body=req).json()
    assert answer["agentStatus"] == "IMPORT_EXCEPTION" and not any(answer["data"].values())


def test_download_etag_md5_and_404(fakeci):
    content = os.urandom(10000)
    md5 = hashlib.md5(content).hexdigest()
    assert fakeci.add_file("upgrade/devopsAgent_linux", content)["md5"] == md5
    resp = call(fakeci, "GET", DOWNLOAD + "upgrade/devopsAgent_linux")
    assert resp.status == 200 and resp.body == content
    assert resp.headers["X-Checksum-Md5"] == md5
    assert resp.headers["Content-Type"] == "application/octet-stream"
    assert "filename = devopsAgent_linux" in resp.headers["Content-Disposition"]
    resp = call(fakeci, "GET", DOWNLOAD + f"upgrade/devopsAgent_linux&eTag={md5}")
    assert resp.status == 304 and resp.body == b""
    assert call(fakeci, "GET", DOWNLOAD + "upgrade/devopsAgent_linux&eTag=00").status == 200
    assert call(fakeci, "GET", DOWNLOAD + "jre/linux/jre.zip").status == 404
    fakeci.set_state(agentStatus="DELETE")
    assert call(fakeci, "GET", DOWNLOAD + "upgrade/devopsAgent_linux").status == 404
    assert fakeci.violations == []


def test_download_overrides(fakeci):
    fakeci.add_file("jar/worker-agent.jar", b"v1.15.3\n" * 1000, md5="0" * 32)
    resp = call(fakeci, "GET", DOWNLOAD + "jar/worker-agent.jar")
    assert resp.status == 200 and resp.headers["X-Checksum-Md5"] == "0" * 32
    fakeci.add_file("jar/worker-agent.jar", b"x" * 1000, md5="")
    assert "X-Checksum-Md5" not in call(fakeci, "GET", DOWNLOAD + "jar/worker-agent.jar").headers
    fakeci.add_file("jre/linux/jre.zip", b"z" * 100000, truncate=True)
    with pytest.raises(http.client.IncompleteRead):
        call(fakeci, "GET", DOWNLOAD + "jre/linux/jre.zip")
    fakeci.add_file("jre/linux/jre.zip", b"z" * 100000, stall=5)
    started = time.monotonic()
    with pytest.raises((TimeoutError, OSError)):
        call(fakeci, "GET", DOWNLOAD + "jre/linux/jre.zip", timeout=0.5)
    assert time.monotonic() - started < 4


# ---------------------------------------------------------------------- ask

UPGRADE_BODY = {"workerVersion": "v1.15.2", "goAgentVersion": "v1.12.0", "jdkVersion": None,
                "dockerInitFileInfo": {"fileMd5": "", "needUpgrade": False}}
NO_UPGRADE = {"agent": False, "worker": False, "jdk": False, "dockerInitFile": False}


def ask_body(build="ALL", upgrade=True, pipeline=False, docker_debug=False, **heartbeat):
    """A ThirdPartyAskInfo like the HEAD Go agent sends it (upgrade null unless asked)."""
    hb = json.loads(json.dumps(HEARTBEAT_BODY))
    hb["props"]["osVersion"] = '{"Name":"Debian GNU/Linux","KernelVersion":"6.1.0"}'
    hb.update(heartbeat)
    return {"askEnable": {"build": build, "upgrade": upgrade, "dockerDebug": docker_debug,
                          "pipeline": pipeline},
            "heartbeat": hb, "upgrade": dict(UPGRADE_BODY) if upgrade else None}


def ask(ci, body=None, **kw):
    """POST the ask; returns the decoded answer (asserts HTTP 200)."""
    resp = call(ci, "POST", ASK, body=body or ask_body(**kw))
    assert resp.status == 200, resp.body
    return resp.json()


def test_ask_answer_carries_every_part(fakeci):
    fakeci.set_state(pascalCaseKeys=True, envs={"A": "1"})    # legacy heartbeat only
    build = fakeci.queue_build()
    fakeci.queue_pipeline(command="uptime", seq_id="s1")
    fakeci.set_upgrade(workerVersion="v1.16.0")
    body = ask_body(pipeline=True)
    answer = ask(fakeci, body)
    assert answer["status"] == 0 and answer["agentStatus"] == "IMPORT_OK"
    assert "message" not in answer
    data = answer["data"]
    assert sorted(data) == ["build", "heartbeat", "pipeline", "upgrade"]
    heartbeat = data["heartbeat"]
    assert heartbeat["agentStatus"] == "IMPORT_OK" and heartbeat["parallelTaskCount"] == 4
    assert "AgentStatus" not in heartbeat and "ParallelTaskCount" not in heartbeat
    assert heartbeat["envs"] == {"A": "1"} and heartbeat["masterVersion"] == "v1.12.0-beta.39"
    assert "gateway" not in heartbeat                        # null values are absent
    assert data["build"]["buildId"] == build["buildId"] and "script" not in data["build"]
    assert data["upgrade"] == dict(NO_UPGRADE, worker=True)
    assert data["pipeline"] == {"type": "COMMAND", "seqId": "s1", "command": "uptime"}
    assert fakeci.get_state()["lastHeartbeat"] == body["heartbeat"]
    assert fakeci.asks() == [body]
    assert fakeci.count("requests", "/ask") == 1 and fakeci.count("requests", "newHeartbeat") == 0
    assert [b["buildId"] for b in fakeci.builds()["running"]] == [build["buildId"]]
    assert fakeci.violations == []
    # The legacy heartbeat still honours pascalCaseKeys.
    legacy = call(fakeci, "POST", HEARTBEAT, body=HEARTBEAT_BODY).json()["data"]
    assert legacy["AgentStatus"] == "IMPORT_OK"


def test_ask_idle_answer_and_disabled_parts(fakeci):
    answer = ask(fakeci, build="ALL", upgrade=False, pipeline=True)
    assert answer["agentStatus"] == "IMPORT_OK" and list(answer["data"]) == ["heartbeat"]
    fakeci.queue_build()
    fakeci.queue_pipeline(command="ls")
    fakeci.set_upgrade(worker=True)
    answer = ask(fakeci, build="NONE", upgrade=False, pipeline=False)
    assert list(answer["data"]) == ["heartbeat"]
    assert len(fakeci.builds()["queued"]) == 1 and fakeci.pipelines()[0]["served"] == 0
    assert not fakeci.get_state()["upgrading"]
    assert fakeci.violations == []


def test_ask_hands_a_build_out_exactly_once(fakeci):
    binary = fakeci.queue_build()
    docker = fakeci.queue_build(dockerBuildInfo={"agentId": "a", "secretKey": "s", "image": "i"})
    first = ask(fakeci, build="DOCKER", upgrade=False)["data"]
    assert first["build"]["buildId"] == docker["buildId"]
    assert "build" not in ask(fakeci, build="DOCKER", upgrade=False)["data"]
    second = ask(fakeci, build="BINARY", upgrade=False)["data"]
    assert second["build"]["buildId"] == binary["buildId"]
    assert "build" not in ask(fakeci, build="ALL", upgrade=False)["data"]
    assert [b["buildId"] for b in fakeci.pulled] == [docker["buildId"], binary["buildId"]]
    assert fakeci.count("pulled") == 2 and fakeci.builds()["queued"] == []
    # The legacy pull sees the same queue.
    third = fakeci.queue_build()
    assert pull(fakeci)["data"]["buildId"] == third["buildId"]
    assert "build" not in ask(fakeci, upgrade=False)["data"]


def test_ask_upgrade_part_and_upgrading_window(fakeci):
    fakeci.set_upgrade(worker=True)
    answer = ask(fakeci, build="NONE", upgrade=True)
    assert answer["data"]["upgrade"] == dict(NO_UPGRADE, worker=True)
    assert fakeci.get_state()["upgrading"]
    build = fakeci.queue_build()
    assert "build" not in ask(fakeci, build="ALL", upgrade=False)["data"]   # upgrading
    assert "data" not in pull(fakeci)
    call(fakeci, "DELETE", DISPATCH + "/upgrade?success=false")
    assert ask(fakeci, build="ALL", upgrade=False)["data"]["build"]["buildId"] == build["buildId"]
    # A build and an upgrade offer can come in the same answer.
    fakeci.queue_build()
    both = ask(fakeci, build="ALL", upgrade=True)["data"]
    assert "build" in both and both["upgrade"]["worker"] is True
    fakeci.set_upgrade()
    assert ask(fakeci, build="NONE", upgrade=True)["data"]["upgrade"] == NO_UPGRADE


def test_ask_pipeline_part_has_no_rate_limit_of_its_own(fakeci):
    fakeci.set_state(rateLimits=True)
    fakeci.queue_pipeline(command="df -h", seq_id="p1")
    assert call(fakeci, "GET", PIPELINES).json()["data"]["seqId"] == "p1"
    assert call(fakeci, "GET", PIPELINES).json()["message"] == "request too frequently"
    assert ask(fakeci, build="NONE", upgrade=False, pipeline=True)["data"]["pipeline"] == {
        "type": "COMMAND", "seqId": "p1", "command": "df -h"}
    update = {"seqId": "p1", "status": "SUCCESS", "response": "ok"}
    assert call(fakeci, "PUT", PIPELINES, body=update).json()["data"] is True
    fakeci.set_state(rateLimits=False)
    assert "pipeline" not in ask(fakeci, build="NONE", upgrade=False, pipeline=True)["data"]


def test_ask_for_a_deleted_agent(fakeci):
    fakeci.queue_build()
    fakeci.set_state(agentStatus="DELETE")
    answer = ask(fakeci, build="ALL", upgrade=True)
    assert answer["status"] == 0 and answer["agentStatus"] == "DELETE"
    assert answer["data"]["heartbeat"]["agentStatus"] == "DELETE"
    assert "build" not in answer["data"] and answer["data"]["upgrade"] == NO_UPGRADE
    assert len(fakeci.builds()["queued"]) == 1
    fakeci.set_state(agentStatus="UN_IMPORT")
    answer = ask(fakeci, build="ALL", upgrade=False)
    assert answer["agentStatus"] == "UN_IMPORT" and "build" not in answer["data"]


def test_ask_on_a_server_without_ask(fakeci):
    fakeci.set_state(askSupported=False)
    resp = call(fakeci, "POST", ASK, body=ask_body())
    assert resp.status == 404
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.json() == {"status": 404, "message": "资源不存在", "data": "HTTP 404 Not Found"}
    bad = call(fakeci, "POST", ASK, body={"nonsense": 1}, headers={"X-DEVOPS-AGENT-ID": "x"})
    assert bad.status == 404                           # before any auth or body check
    assert call(fakeci, "POST", HEARTBEAT, body=HEARTBEAT_BODY).status == 200
    assert call(fakeci, "GET", STATUS).json()["data"] == "IMPORT_OK"
    fakeci.queue_build()
    assert "data" in pull(fakeci)
    assert fakeci.violations == [] and fakeci.count("requests", "/ask") == 2
    fakeci.set_state(askSupported=True)                # "the server was upgraded"
    assert ask(fakeci)["status"] == 0


def test_ask_rate_limit(fakeci):
    fakeci.set_state(rateLimits=True)
    build = fakeci.queue_build()
    first = ask(fakeci, build="NONE", upgrade=False)
    assert first["status"] == 0
    assert ask(fakeci) == {"status": 1, "message": "request too frequently"}
    assert ask(fakeci) == {"status": 1, "message": "request too frequently"}
    assert fakeci.count("rate_limited") == 2 and fakeci.count("rate_limited", "/ask") == 2
    assert [r["name"] for r in fakeci.rate_limited] == ["ask", "ask"]
    assert fakeci.count("requests", "/ask") == 3 and len(fakeci.asks()) == 3
    assert [b["buildId"] for b in fakeci.builds()["queued"]] == [build["buildId"]]
    # The other limits are separate: a heartbeat right after an ask is answered.
    assert call(fakeci, "POST", HEARTBEAT, body=HEARTBEAT_BODY).json()["status"] == 0
    assert admin(fakeci, "GET", "wait?what=rate_limited&count=2&timeout=1")[0] == 200
    assert len(admin(fakeci, "GET", "rate_limited")[1]) == 2


@pytest.mark.parametrize("mutate,expect", [
    (lambda b: b["heartbeat"].update(errorExitData={"ErrorEnum": "THIRD_AGENT_EXIT_NOT_WORKER",
                                                    "Message": "x"}),
     "$.heartbeat.errorExitData.errorEnum: required key missing (found 'ErrorEnum'"),
    (lambda b: b["askEnable"].pop("dockerDebug"), "$.askEnable.dockerDebug: required key missing"),
    (lambda b: b["askEnable"].update(pipeline=None), "$.askEnable.pipeline: required key is null"),
    (lambda b: b["askEnable"].update(build="SOME"), "$.askEnable.build: expected one of"),
    (lambda b: b["askEnable"].update(upgrade="true"), "$.askEnable.upgrade: expected bool"),
    (lambda b: b.pop("askEnable"), "$.askEnable: required key missing"),
    (lambda b: b["heartbeat"]["props"].update(osVersion={"Name": "x"}),
     "$.heartbeat.props.osVersion: expected string"),
    (lambda b: b["heartbeat"].pop("agentIp"), "$.heartbeat.agentIp: required key missing"),
    (lambda b: b["upgrade"].update(workerVersion=1), "$.upgrade.workerVersion: expected string"),
])
def test_ask_body_shape_violations(fakeci, mutate, expect):
    body = ask_body()
    mutate(body)
    resp = call(fakeci, "POST", ASK, body=body)
    assert resp.status == 400 and resp.json()["status"] == 400
    [violation] = fakeci.violations
    assert violation["kind"] == "body" and expect in violation["message"]
    assert fakeci.get_state()["lastHeartbeat"] is None


@pytest.mark.parametrize("enable_upgrade,upgrade,expect", [
    (False, UPGRADE_BODY, "must be null while askEnable.upgrade is false"),
    (True, None, "null while askEnable.upgrade is true"),
])
def test_ask_upgrade_and_ask_enable_disagree(fakeci, enable_upgrade, upgrade, expect):
    fakeci.set_upgrade(worker=True)
    body = dict(ask_body(upgrade=enable_upgrade), upgrade=upgrade)
    answer = ask(fakeci, body)                          # answered, like the real server
    assert answer["status"] == 0 and "upgrade" not in answer["data"]
    [violation] = fakeci.violations
    assert violation["kind"] == "body" and expect in violation["message"]
    assert not fakeci.get_state()["upgrading"]


def test_ask_lower_camel_error_exit_data_is_accepted(fakeci):
    exit_data = {"errorEnum": "THIRD_AGENT_EXIT_TIMEOUT_ERROR", "message": None}
    ask(fakeci, ask_body(errorExitData=exit_data))
    assert fakeci.get_state()["lastHeartbeat"]["errorExitData"] == exit_data
    assert fakeci.violations == []


def test_corrupt_ask_keeps_the_build_queued(fakeci):
    build = fakeci.queue_build()
    fakeci.queue_pipeline(command="ls", seq_id="s1")
    fakeci.set_upgrade(worker=True)
    fakeci.corrupt_ask("build", "oops")
    fakeci.corrupt_ask("heartbeat", 42)
    fakeci.corrupt_ask("upgrade", {"agentStatus": 5})
    fakeci.corrupt_ask("pipeline", [1, 2], count=2)
    answer = ask(fakeci, pipeline=True)
    assert answer["status"] == 0 and answer["agentStatus"] == "IMPORT_OK"
    assert answer["data"] == {"heartbeat": 42, "build": "oops", "upgrade": {"agentStatus": 5},
                              "pipeline": [1, 2]}
    assert [b["buildId"] for b in fakeci.builds()["queued"]] == [build["buildId"]]
    assert fakeci.pulled == [] and not fakeci.get_state()["upgrading"]
    assert fakeci.pipelines()[0]["served"] == 0
    assert fakeci.ask_corruptions() == [{"part": "pipeline", "value": [1, 2], "count": 1}]
    data = ask(fakeci, pipeline=True)["data"]
    assert data["build"]["buildId"] == build["buildId"] and data["pipeline"] == [1, 2]
    assert data["upgrade"]["worker"] is True and data["heartbeat"]["agentStatus"] == "IMPORT_OK"
    assert fakeci.ask_corruptions() == []
    assert ask(fakeci, pipeline=True)["data"]["pipeline"]["seqId"] == "s1"


def test_corrupt_ask_data_and_agent_status(fakeci):
    build = fakeci.queue_build()
    fakeci.corrupt_ask("data", "not an object", count=-1)
    for _ in range(2):
        assert ask(fakeci) == {"status": 0, "agentStatus": "IMPORT_OK", "data": "not an object"}
    assert len(fakeci.builds()["queued"]) == 1
    fakeci.clear_ask_corruptions()
    fakeci.corrupt_ask("agentStatus", None)           # top-level status missing, build present
    answer = ask(fakeci, upgrade=False)
    assert "agentStatus" not in answer and answer["data"]["build"]["buildId"] == build["buildId"]
    with pytest.raises(ValueError):
        fakeci.corrupt_ask("debug", 1)
    with pytest.raises(ValueError):
        fakeci.corrupt_ask("build", 1, count=0)


def test_corrupt_ask_over_admin_http(fakeci):
    status, rules = admin(fakeci, "POST", "ask_corruptions",
                          {"part": "heartbeat", "value": {"agentStatus": 5}, "count": 2})
    assert status == 200 and rules == [{"part": "heartbeat", "value": {"agentStatus": 5},
                                        "count": 2}]
    assert admin(fakeci, "POST", "ask_corruptions", [{"part": "build", "value": None}])[0] == 200
    assert len(admin(fakeci, "GET", "ask_corruptions")[1]) == 2
    assert admin(fakeci, "POST", "ask_corruptions", {"part": "nope", "value": 1})[0] == 400
    assert admin(fakeci, "POST", "ask_corruptions", {"part": "build"})[0] == 400
    assert ask(fakeci)["data"]["heartbeat"] == {"agentStatus": 5}
    assert admin(fakeci, "DELETE", "ask_corruptions")[1] == {"ok": True}
    assert fakeci.ask_corruptions() == []
    body = ask_body()
    ask(fakeci, body)
    assert admin(fakeci, "GET", "asks")[1] == [body, body]


def test_ask_data_is_null(fakeci):
    fakeci.corrupt_ask("heartbeat", None)
    assert ask(fakeci, build="ALL", upgrade=False) == {"status": 1, "message": "data is null"}
    # A failed heartbeat part with a build: status 0, no agentStatus (quirk Q1).
    build = fakeci.queue_build()
    fakeci.corrupt_ask("heartbeat", None)
    answer = ask(fakeci, build="ALL", upgrade=False)
    assert answer["status"] == 0 and "agentStatus" not in answer
    assert list(answer["data"]) == ["build"]
    assert answer["data"]["build"]["buildId"] == build["buildId"]
    # "Nothing to hand out" is not a failure.
    assert list(ask(fakeci, build="ALL", upgrade=False)["data"]) == ["heartbeat"]


def test_ask_with_a_wrong_secret(fakeci):
    fakeci.queue_build()
    bad = {"X-DEVOPS-AGENT-SECRET-KEY": "wrong"}
    resp = call(fakeci, "POST", ASK, body=ask_body(upgrade=False), headers=bad)
    assert resp.status == 200 and resp.json() == {"status": 1, "message": "data is null"}
    resp = call(fakeci, "POST", ASK, body=ask_body(upgrade=True), headers=bad)
    assert resp.json() == {"status": 0, "data": {"upgrade": NO_UPGRADE}}
    assert [v["kind"] for v in fakeci.violations] == ["auth", "auth"]
    assert len(fakeci.builds()["queued"]) == 1


def test_ask_faults_apply(fakeci):
    fakeci.add_fault("/ask", "wrongtype")
    data = ask(fakeci)["data"]
    assert data["heartbeat"]["parallelTaskCount"] == "4" and data["upgrade"]["agent"] == "true"
    assert data["build"]["buildId"] == ["b-1"] and data["pipeline"]["seqId"] == 42
    fakeci.add_fault("/ask", "500")
    assert call(fakeci, "POST", ASK, body=ask_body()).status == 500
    assert [r["fault"] for r in fakeci.requests(path_contains="/ask")] == ["wrongtype", "500"]


# ------------------------------------------------------------------- faults

TRANSPORT_ERRORS = (ConnectionError, http.client.HTTPException, urllib.error.URLError)


@pytest.mark.parametrize("mode,check", [
    ("500", lambda r: r.status == 500 and r.json()["status"] == 500),
    ("html", lambda r: r.status == 502 and r.body.startswith(b"<html>")),
    ("garbage", lambda r: r.status == 200 and not _is_json(r.body)),
    ("truncated", lambda r: r.status == 200 and not _is_json(r.body) and r.body.startswith(b"{")),
    ("wrongtype", lambda r: r.status == 200 and not isinstance(r.json()["data"], str)),
    ("huge", lambda r: r.status == 200 and len(r.body) > 20 * 1024 * 1024),
])
def test_fault_mode_answers(fakeci, mode, check):
    fakeci.add_fault("/status", mode)
    assert check(call(fakeci, "GET", STATUS))
    assert call(fakeci, "GET", STATUS).json()["data"] == "IMPORT_OK"     # count=1: one shot
    assert [r["fault"] for r in fakeci.requests()] == [mode, None]


def _is_json(body):
    try:
        json.loads(body)
        return True
    except ValueError:
        return False


@pytest.mark.parametrize("mode", ["close", "down"])
def test_fault_close_drops_the_connection(fakeci, mode):
    fakeci.add_fault("/status", mode)
    with pytest.raises(TRANSPORT_ERRORS):
        call(fakeci, "GET", STATUS)
    assert call(fakeci, "GET", STATUS).status == 200


def test_fault_truncated_close_variant(fakeci):
    fakeci.add_fault("/status", "truncated", variant="close")
    with pytest.raises(http.client.IncompleteRead):
        call(fakeci, "GET", STATUS)


def test_fault_wrongtype_per_endpoint(fakeci):
    fakeci.add_fault("newHeartbeat", "wrongtype")
    data = call(fakeci, "POST", HEARTBEAT, body=HEARTBEAT_BODY).json()["data"]
    assert data["parallelTaskCount"] == "4" and data["props"]["keepLogsHours"] == "72"
    fakeci.add_fault("startup?buildType", "wrongtype")
    assert pull(fakeci)["data"]["buildId"] == ["b-1"]
    fakeci.add_fault("/status", "wrongtype", variant="status")
    assert call(fakeci, "GET", STATUS).json()["status"] == "0"


def test_fault_stall_then_normal_answer(fakeci):
    fakeci.add_fault("/status", "stall", seconds=0.5)
    started = time.monotonic()
    assert call(fakeci, "GET", STATUS).json()["data"] == "IMPORT_OK"
    assert time.monotonic() - started >= 0.5
    fakeci.add_fault("/status", "stall", seconds=5)
    with pytest.raises((TimeoutError, OSError)):
        call(fakeci, "GET", STATUS, timeout=0.3)


def test_fault_count_method_json_and_clear(fakeci):
    fakeci.add_fault("/agents/pipelines", "500", count=2, method="PUT")
    fakeci.add_fault("/status", "json", count=-1, body={"status": 0, "data": "DELETE"})
    assert call(fakeci, "GET", PIPELINES).status == 200
    update = {"seqId": "s", "status": "SUCCESS", "response": ""}
    assert [call(fakeci, "PUT", PIPELINES, body=update).status for _ in range(3)] == [500, 500, 200]
    for _ in range(3):
        assert call(fakeci, "GET", STATUS).json()["data"] == "DELETE"
    assert len(fakeci.faults()) == 1
    fakeci.clear_faults()
    assert call(fakeci, "GET", STATUS).json()["data"] == "IMPORT_OK"


def test_down_switch_keeps_admin_reachable(fakeci):
    fakeci.set_down(True)
    for path in (STATUS, PULL + "ALL", WORKER + "/steps?buildId=x&vmSeqId=1"):
        with pytest.raises(TRANSPORT_ERRORS):
            call(fakeci, "GET", path)
    assert admin(fakeci, "GET", "ping")[1]["ok"] is True
    assert admin(fakeci, "POST", "down", {"down": False}) == (200, {"down": False})
    assert call(fakeci, "GET", STATUS).status == 200
    assert [r["fault"] for r in fakeci.requests()] == ["down"] * 3 + [None]


def test_hang_holds_requests_until_released(fakeci):
    fakeci.set_hang(True)
    with pytest.raises(TRANSPORT_ERRORS + (TimeoutError,)):
        call(fakeci, "GET", STATUS, timeout=1.0)     # no answer in time
    fakeci.set_hang(False)
    assert call(fakeci, "GET", STATUS).status == 200
    assert wait_until(lambda: [r["fault"] for r in fakeci.requests()] == ["hang", None])


# --------------------------------------------------------------- fleets (benches)

def test_added_agents_share_the_server_and_keep_their_own_secret(fakeci):
    fakeci.add_agent("fleet-2", "s2")
    other = {"X-DEVOPS-AGENT-ID": "fleet-2", "X-DEVOPS-AGENT-SECRET-KEY": "s2"}
    assert call(fakeci, "GET", STATUS, headers=other).json()["data"] == "IMPORT_OK"
    assert call(fakeci, "GET", STATUS).json()["data"] == "IMPORT_OK"
    wrong = {"X-DEVOPS-AGENT-ID": "fleet-2", "X-DEVOPS-AGENT-SECRET-KEY": fakeci.secret_key}
    assert call(fakeci, "GET", STATUS, headers=wrong).status == 401
    assert [v["kind"] for v in fakeci.violations] == ["auth"]


def test_lean_records_keep_the_agent_and_wire_sizes():
    from fakeci.server import FakeCI
    with FakeCI(lean=True) as ci:
        resp = call(ci, "POST", HEARTBEAT, HEARTBEAT_BODY)
        assert resp.status == 200
        (rec,) = ci.requests()
        assert set(rec) == {"t", "method", "path", "url", "agent", "fault", "status",
                            "rx", "tx"}
        assert rec["agent"] == ci.agent_id and rec["status"] == 200
        assert rec["rx"] > len(json.dumps(HEARTBEAT_BODY)) and rec["tx"] > len(resp.body)


# --------------------------------------------------------------- admin HTTP

def test_admin_http_api_round_trip(fakeci):
    status, build = admin(fakeci, "POST", "builds", {"script": "echo x", "vmSeqId": "2",
                                                     "workspace": "/ws"})
    assert status == 200 and build["script"] == "echo x" and build["vmSeqId"] == "2"
    assert admin(fakeci, "POST", "builds", {"bogus": 1})[0] == 400
    assert admin(fakeci, "POST", "state", {"parallelTaskCount": 2,
                                           "envs": {"A": "1"}})[1]["parallelTaskCount"] == 2
    assert admin(fakeci, "POST", "state", {"agentStatus": "BROKEN"})[0] == 400
    assert admin(fakeci, "POST", "pipelines", {"command": "ls", "seqId": "s1"})[1]["seqId"] == "s1"
    assert admin(fakeci, "POST", "upgrade", {"worker": True})[1] == {"worker": True}
    content = base64.b64encode(b"hello").decode()
    assert admin(fakeci, "POST", "files", {"name": "jar/worker-agent.jar",
                                           "content_b64": content})[1]["size"] == 5
    assert admin(fakeci, "POST", "faults", [{"path_contains": "/status", "mode": "500"}])[0] == 200
    assert admin(fakeci, "POST", "faults", {"path_contains": "/x", "mode": "nope"})[0] == 400

    pulled = pull(fakeci)["data"]
    call(fakeci, "POST", FINISH, body=finish_body(pulled))
    assert admin(fakeci, "GET", "finished")[1][0]["buildId"] == build["buildId"]
    assert admin(fakeci, "GET", f"finished?buildId={build['buildId']}")[1] != []
    assert len(admin(fakeci, "GET", "requests?path_contains=workerBuildFinish")[1]) == 1
    for name in ("violations", "pipeline_updates", "upgrade_finishes", "metrix", "logs",
                 "worker_ends", "faults", "builds", "state", "pipelines"):
        assert admin(fakeci, "GET", name)[0] == 200, name
    assert admin(fakeci, "DELETE", "faults")[1] == {"ok": True}
    assert admin(fakeci, "POST", "reset")[1] == {"ok": True}
    assert fakeci.requests() == [] and fakeci.finished == []
    assert admin(fakeci, "GET", "nope")[0] == 404


def test_admin_wait_blocks_until_condition(fakeci):
    assert admin(fakeci, "GET", "wait?what=finished&count=0&timeout=1") == (
        200, {"ok": True, "what": "finished", "count": 0})
    fakeci.queue_build()
    build = pull(fakeci)["data"]
    timer = threading.Timer(0.3, lambda: call(fakeci, "POST", FINISH, body=finish_body(build)))
    timer.start()
    started = time.monotonic()
    status, result = admin(fakeci, "GET", "wait?what=finished&count=1&timeout=10")
    timer.join()
    assert status == 200 and result["ok"] and 0.2 < time.monotonic() - started < 5


def test_admin_wait_times_out_with_408(fakeci):
    started = time.monotonic()
    status, result = admin(fakeci, "GET", "wait?what=requests&path_contains=/status&timeout=0.3")
    assert status == 408 and result == {"ok": False, "what": "requests", "count": 0}
    assert time.monotonic() - started < 3


def test_wait_for_in_process(fakeci):
    threading.Timer(0.2, lambda: call(fakeci, "GET", STATUS)).start()
    assert fakeci.wait_for("requests", 1, timeout=5, path_contains="/status")
    assert not fakeci.wait_for("finished", 1, timeout=0.2)


def test_restart_binds_the_same_port(fakeci):
    port = fakeci.port
    fakeci.queue_build()
    fakeci.stop()
    with pytest.raises(urllib.error.URLError):
        OPENER.open(f"http://127.0.0.1:{port}/admin/ping", timeout=5)
    fakeci.start()
    assert fakeci.port == port
    assert "data" in pull(fakeci)                  # state survived the restart


def test_command_line_server(tmp_path):
    port_file = tmp_path / "port"
    state_dir = tmp_path / "state"
    proc = subprocess.Popen([sys.executable, str(TESTS_DIR / "fakeci" / "server.py"),
                             "--port", "0", "--project-id", "p", "--agent-id", "a",
                             "--secret-key", "s", "--port-file", str(port_file),
                             "--state-dir", str(state_dir)],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        port = int(port_file.read_text())
        assert line == f"fakeci listening on 127.0.0.1:{port}"
        url = f"http://127.0.0.1:{port}"
        with OPENER.open(url + "/admin/ping", timeout=5) as resp:
            assert json.loads(resp.read()) == {"ok": True, "port": port}
        req = urllib.request.Request(url + STATUS, headers={
            "X-DEVOPS-BUILD-TYPE": "AGENT", "X-DEVOPS-PROJECT-ID": "p",
            "X-DEVOPS-AGENT-ID": "a", "X-DEVOPS-AGENT-SECRET-KEY": "s"})
        with OPENER.open(req, timeout=5) as resp:
            assert json.loads(resp.read())["data"] == "IMPORT_OK"
        assert wait_until(lambda: (state_dir / "requests.jsonl").exists(), 5)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        proc.stdout.close()


# ------------------------------------------------------------ java stand-in

def run_java(install_dir, *args, env_extra=None, timeout=30):
    return subprocess.run([str(install_dir / "jdk" / "bin" / "java"), *args], cwd=install_dir,
                          env=agent_env(env_extra), capture_output=True, text=True,
                          timeout=timeout)


def worker_argv(install_dir, build_info_arg, error_file):
    """The java command line of the agent's start script (agent-behaviour 6.4)."""
    return [f"-Ddevops.agent.error.file={error_file}", "-Dbuild.type=AGENT",
            "-DAGENT_LOG_PREFIX=x_1_agent", "-Xmx2g",
            f"-Djava.io.tmpdir={install_dir / 'build_tmp'}",
            "-jar", str(install_dir / "worker-agent.jar"), build_info_arg]


def pulled_build(fakeci, script, **fields):
    """Queue a build and pull it like the agent; returns (build data, base64 arg)."""
    fakeci.queue_build(script=script, **fields)
    data = pull(fakeci)["data"]
    return data, base64.b64encode(json.dumps(data).encode()).decode()


@pytest.fixture
def error_file(bare_install_dir):
    (bare_install_dir / "build_tmp").mkdir()
    path = bare_install_dir / "build_tmp" / "build_msg.log"
    path.write_text("Builder process was killed by the OS or another program.")
    return path


def test_java_version(bare_install_dir):
    result = run_java(bare_install_dir, "-version")
    assert result.returncode == 0 and result.stdout == ""
    assert result.stderr.splitlines() == [
        'openjdk version "17.0.9" 2023-10-17',
        "OpenJDK Runtime Environment (build 17.0.9+9)",
        "OpenJDK 64-Bit Server VM (build 17.0.9+9, mixed mode)"]


def test_java_worker_version(bare_install_dir):
    args = ["-Djava.io.tmpdir=build_tmp", "-Xmx256m", "-cp", "worker-agent.jar",
            "com.tencent.devops.agent.AgentVersionKt"]
    result = run_java(bare_install_dir, *args)
    assert result.returncode == 0 and result.stdout == WORKER_VERSION + "\n"
    (bare_install_dir / "worker-agent.jar").write_text("PK\x03\x04 not a version\n")
    assert run_java(bare_install_dir, *args).returncode == 1
    (bare_install_dir / "worker-agent.jar").unlink()
    result = run_java(bare_install_dir, *args)
    assert result.returncode == 1 and "Error" in result.stderr


def test_java_hang_knob(bare_install_dir):
    with pytest.raises(subprocess.TimeoutExpired):
        run_java(bare_install_dir, "-version", env_extra={"FAKECI_JAVA_HANG": "version"},
                 timeout=1)


def test_java_worker_success(fakeci, bare_install_dir, error_file):
    build, arg = pulled_build(fakeci, "echo line one\necho line two >&2\ntouch made-here\n")
    result = run_java(bare_install_dir, *worker_argv(bare_install_dir, arg, error_file),
                      env_extra={"DEVOPS_BUILD_ID": build["buildId"]})
    assert result.returncode == 0, result.stderr
    assert error_file.read_text() == ""
    assert fakeci.log_messages(build["buildId"]) == ["line one", "line two"]
    workspace = bare_install_dir / "workspace" / build["pipelineId"] / "src"
    assert (workspace / "made-here").exists()
    [end] = fakeci.worker_ends
    assert end["exitCode"] == 0 and end["buildId"] == build["buildId"]
    assert end["env"]["DEVOPS_BUILD_ID"] == build["buildId"]
    assert end["props"]["devops.agent.error.file"] == str(error_file)
    [log_req] = fakeci.requests(path_contains=LOGS)[:1]
    assert log_req["headers"]["x-devops-vm-sid"] == "1"
    assert log_req["headers"]["content-type"] == JSON_CT
    assert fakeci.violations == []


def test_java_worker_failure_writes_error_file(fakeci, bare_install_dir, error_file, tmp_path):
    workspace = tmp_path / "custom-ws"
    build, arg = pulled_build(fakeci, "echo failing\nexit 7\n", workspace=str(workspace))
    result = run_java(bare_install_dir, *worker_argv(bare_install_dir, arg, error_file))
    assert result.returncode == 0
    assert error_file.read_text() == "step failed with exit code 7"
    assert workspace.is_dir()
    assert fakeci.worker_ends[0]["exitCode"] == 7


def test_java_worker_forced_exit_code(fakeci, bare_install_dir, error_file):
    _, arg = pulled_build(fakeci, "#!fake exit=3")
    result = run_java(bare_install_dir, *worker_argv(bare_install_dir, arg, error_file))
    assert result.returncode == 3 and error_file.read_text() == ""


def test_java_worker_no_end_directive(fakeci, bare_install_dir, error_file):
    _, arg = pulled_build(fakeci, "#!fake no-end\nexit 1\n")
    result = run_java(bare_install_dir, *worker_argv(bare_install_dir, arg, error_file))
    assert result.returncode == 0 and fakeci.worker_ends == []
    assert error_file.read_text() == "step failed with exit code 1"


def test_java_worker_build_info_from_file_and_env(fakeci, bare_install_dir, error_file):
    _, arg = pulled_build(fakeci, "echo from-file")
    info = bare_install_dir / "build_tmp" / "info"
    info.write_text(arg)
    info.chmod(0o600)
    argv = worker_argv(bare_install_dir, f"@file:{info}", error_file)
    assert run_java(bare_install_dir, *argv).returncode == 0
    build, arg = pulled_build(fakeci, "echo from-env")
    info.write_text(arg)
    argv = worker_argv(bare_install_dir, "", error_file)[:-1]
    result = run_java(bare_install_dir, *argv, env_extra={"DEVOPS_BUILD_INFO_FILE": str(info)})
    assert result.returncode == 0, result.stderr
    assert fakeci.log_messages(build["buildId"]) == ["from-env"]


def test_java_worker_missing_jar(fakeci, bare_install_dir, error_file):
    _, arg = pulled_build(fakeci, "echo never")
    (bare_install_dir / "worker-agent.jar").unlink()
    result = run_java(bare_install_dir, *worker_argv(bare_install_dir, arg, error_file))
    assert result.returncode == 1 and "Unable to access jarfile" in result.stderr
    assert error_file.read_text().startswith("Builder process was killed")


def test_java_worker_sigterm(fakeci, bare_install_dir, error_file):
    _, arg = pulled_build(fakeci, "echo started\nsleep 60\n")
    proc = subprocess.Popen([str(bare_install_dir / "jdk" / "bin" / "java"),
                             *worker_argv(bare_install_dir, arg, error_file)],
                            cwd=bare_install_dir, env=agent_env(), start_new_session=True)
    try:
        assert fakeci.wait_for("logs", 1, timeout=10)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 143
        assert error_file.read_text() == "worker terminated"
    finally:
        # The agent would kill the worker's whole session; do the same for `sleep`.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        assert wait_until(lambda: not processes_in(bare_install_dir), 5)


def test_install_layout(fakeci, bare_install_dir):
    props = read_properties(bare_install_dir / ".agent.properties")
    assert props["landun.gateway"] == f"127.0.0.1:{fakeci.port}"
    assert props["devops.agent.request.timeout.sec"] == "5"
    assert props["devops.agent.collectorOn"] == "false"
    assert props["devops.parallel.task.count"] == "4"
    assert (bare_install_dir / ".agent.properties").read_text().startswith("#")
    for sub in ("workspace", "logs", "tmp"):
        assert (bare_install_dir / sub).is_dir()
    assert os.access(bare_install_dir / "jdk" / "bin" / "java", os.X_OK)
    assert JAVA_STANDIN.read_bytes() == (bare_install_dir / "jdk" / "bin" / "java").read_bytes()


def test_leftover_processes_are_found_and_killed(bare_install_dir):
    proc = subprocess.Popen(["sleep", "60"], cwd=bare_install_dir / "workspace",
                            start_new_session=True)
    try:
        assert proc.pid in processes_in(bare_install_dir)
        assert kill_leftovers(bare_install_dir) == [proc.pid]
        assert proc.wait(5) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
