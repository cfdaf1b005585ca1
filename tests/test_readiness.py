"""`/-/ready`: 200 only once every link has delivered a window or an error and estimation is on time."""

from __future__ import annotations

import socket
import time

from web import LINKS


def ready(served) -> tuple[int, str]:
    status, _, body = served.request("GET", "/-/ready")
    return status, body


def wait_for(predicate, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.05)


def test_not_ready_before_the_first_cycle_nor_when_estimation_lags(endpoint):
    """The old server answered 200 as soon as its socket was up, whatever the drivers did."""
    served = endpoint("exporter: {window_seconds: 0.05, stall_timeout_seconds: 1}\n" + LINKS, run=False)
    assert ready(served) == (503, "no estimation cycle has completed yet\n")
    served.runtime.cycle()
    assert ready(served) == (200, "ready\n")
    time.sleep(0.3)  # more than 3 windows without a cycle
    status, body = ready(served)
    assert status == 503 and body.startswith("estimation lags by ") and body.endswith("(the window is 0.05 s)\n")
    assert served.request("GET", "/-/healthy")[0] == 200  # alive all along


def test_a_device_that_never_answers_holds_readiness_until_its_timeout(endpoint):
    """A polled device that accepts the connection and never answers: not ready while the first
    poll is pending, ready once it has failed (a link that reports an error is a known state)."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        config = ("exporter: {window_seconds: 0.1, stall_timeout_seconds: 5}\n" + LINKS + f"""
  - name: silent-node
    driver: {{type: etsi015, url: "http://127.0.0.1:{port}/restconf/data/etsi-qkd-sdn-node:qkd_node",
              qkdl_id: 4a7a3c1e-8d1b-4c55-9b7e-0a1f2e3d4c5b, poll_interval_seconds: 0.5, timeout_seconds: 1.5}}
""")
        served = endpoint(config)
        wait_for(lambda: served.runtime.snapshot.sequence > 0 and served.runtime.snapshot.batches[:2].min() > 0)
        status, body = ready(served)
        assert (status, body) == (503, "waiting for the first window or error of 1 link\n")
        wait_for(lambda: ready(served)[0] == 200)
        assert served.runtime.snapshot.errors[served.runtime.table.index["silent-node"]].sum() >= 1
