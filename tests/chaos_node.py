"""`crm-automation serve` in a process of its own, for tests/test_chaos.py to kill with SIGKILL.

Salesforce's REST API is the test's fake org, reached through a loopback relay (RELAY_URL):
`responses` hands each call to the relay, the way the in-process tests hand it to the org.
Everything else (the webhooks, Tryton, SMTP, the state file) is real.

    python tests/chaos_node.py PORT RULES_DIR MAPPINGS_DIR
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import requests
import responses

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from connector.cli import main
from tests.fake_salesforce import INSTANCE

HOP_BY_HOP = {"content-length", "content-encoding", "transfer-encoding", "connection"}


def forward(request: requests.PreparedRequest) -> tuple[int, dict[str, str], bytes]:
    answer = requests.request(str(request.method), os.environ["RELAY_URL"] + request.path_url,
                              data=request.body, headers=dict(request.headers), timeout=30)
    headers = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
    return answer.status_code, headers, answer.content


if __name__ == "__main__":
    port, rules, mappings = sys.argv[1:4]
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add_passthru("http://127.0.0.1")
        for method in (responses.GET, responses.POST, responses.PATCH):
            rsps.add_callback(method, re.compile(re.escape(INSTANCE) + r"/.*"), forward)
        sys.exit(main(["serve", "--port", port, "--rules", rules, "--mappings", mappings]))
