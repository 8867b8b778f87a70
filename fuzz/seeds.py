#!/usr/bin/python3
"""Regenerate the spec-derived seeds of fuzz/corpus/ from the protocol spec.

Usage: fuzz/seeds.py <path to protocol.md>

Every ```json block of protocol.md that is a server answer (it has a
"status" key) seeds the envelope target; the answers of §7.1/7.2, §7.3,
§7.4, §7.7 and §7.9 also seed the status, heartbeat, upgrade, build-info
and pipeline targets. The build objects of §7.7/§7.8 seed the base64
target. Seeds are named spec-<section>-<n>.json; other files in the corpus
directories (hand-written seeds, regressions) are left alone.
"""
import base64
import json
import re
import sys
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"
# section number prefix -> targets its server answers seed
ANSWERS = {
    "7.1": ["status"], "7.2": ["status"], "7.3": ["heartbeat"],
    "7.4": ["upgrade"], "7.6": [], "7.7": ["build_info"], "7.8": [],
    "7.9": ["pipeline"], "8.": ["heartbeat", "upgrade", "build_info", "pipeline"],
}


def sections(text):
    """(section number, body) for each ### / ## heading."""
    for part in re.split(r"\n(?=#{2,3} )", text):
        m = re.match(r"#{2,3} (\d+\.\d*)", part)
        if m:
            yield m.group(1), part


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def main():
    text = Path(sys.argv[1]).read_text()
    for num, body in sections(text):
        blocks = re.findall(r"```json\n(.*?)```", body, re.S)
        for i, block in enumerate(blocks):
            # The spec's docker example mounts a cache in root's home
            # directory; no committed file names a home directory that
            # exists on a real machine.
            raw = re.sub(r"/root(?=/)", "/home/ci", block.strip()).encode()
            obj = json.loads(raw)
            name = f"spec-{num.rstrip('.')}-{i}.json"
            if isinstance(obj, dict) and "status" in obj and isinstance(obj["status"], int):
                write("envelope", name, raw)
                for target in ANSWERS.get(num, []):
                    if num == "8.":
                        # The ask answer: lift each part into its own envelope.
                        part = {"heartbeat": "heartbeat", "upgrade": "upgrade",
                                "build_info": "build", "pipeline": "pipeline"}[target]
                        sub = obj.get("data", {}).get(part)
                        if sub is None:
                            continue
                        raw_sub = json.dumps({"status": 0, "data": sub},
                                             separators=(",", ":")).encode()
                        write(target, name, raw_sub)
                    else:
                        write(target, name, raw)
            elif isinstance(obj, dict) and "buildId" in obj and "vmSeqId" in obj:
                write("build_info_b64", name, base64.b64encode(raw))
            if num == "7.7" and isinstance(obj, dict) and isinstance(obj.get("data"), dict):
                info = json.dumps(obj["data"], separators=(",", ":")).encode()
                write("build_info_b64", name, base64.b64encode(info))


if __name__ == "__main__":
    main()
