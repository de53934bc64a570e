#!/usr/bin/env python3
"""A minimal ScopeHold agent in Python, standard library only.

    SCOPEHOLD_SOCKET=... SCOPEHOLD_TOKEN=shk_... python3 examples/agent.py openai/prod demo

Resolves one key over the daemon's unix socket and uses it without printing it.
"""
import http.client
import json
import os
import socket
import sys


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("scopehold")
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def resolve(secret, project):
    conn = UnixHTTPConnection(os.environ["SCOPEHOLD_SOCKET"])
    body = json.dumps({"secret": secret, "project": project})
    conn.request("POST", "/v1/resolve", body, {
        "Content-Type": "application/json",
        "Authorization": "Bearer " + os.environ["SCOPEHOLD_TOKEN"],
    })
    resp = conn.getresponse()
    answer = json.loads(resp.read())
    if resp.status != 200:
        err = answer["error"]
        raise SystemExit(f"scopehold: {resp.status} {err['code']}: {err['message']}")
    return answer


if __name__ == "__main__":
    secret, project = sys.argv[1], sys.argv[2]
    a = resolve(secret, project)
    # Use the key (here: only its length; an agent would send it to the provider).
    print(f"resolved {secret} version {a['version']} ({len(a['value'])} bytes), audit event {a['event']}")
