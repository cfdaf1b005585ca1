"""The web endpoint attacked: password guessing, slow and idle clients, connection floods."""

from __future__ import annotations

import base64
import socket
import ssl
import threading
import time
import urllib.request
from pathlib import Path

import bcrypt
import pytest
from tls import make_pki
from conftest import parse_exposition, value
from web import LINKS, closed_by_server, raw_exchange, status_of

from qtelemetry.exporter import auth as auth_module
from qtelemetry.exporter import server as server_module


def basic(user: str, password: str | bytes) -> dict[str, str]:
    raw = (user.encode() + b":" + (password if isinstance(password, bytes) else password.encode()))
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def users_config(cost: int, password: bytes = b"scrape-pass") -> str:
    hashed = bcrypt.hashpw(password, bcrypt.gensalt(rounds=cost)).decode()
    return f"exporter: {{web: {{basic_auth_users: {{prometheus: '{hashed}'}}}}}}\n" + LINKS


def test_wrong_passwords_cannot_starve_a_scraper(endpoint):
    """Eight clients guessing passwords kept a scrape waiting behind their bcrypt work (0.31 s ->
    2.4 s). Now the scraper's checked credentials are remembered, guesses queue for one bcrypt
    thread, and beyond the queue they are answered 429 at once."""
    served = endpoint(users_config(cost=10), run=False)
    assert served.request("GET", "/metrics", headers=basic("prometheus", "scrape-pass"))[0] == 200
    stop = threading.Event()
    guesses: list[int] = []

    def guess(user: str) -> None:
        while not stop.is_set():
            guesses.append(served.request("GET", "/metrics", headers=basic(user, "guess"), timeout=60)[0])

    attackers = [threading.Thread(target=guess, args=(user,)) for user in ["prometheus", "nobody"] * 8]
    for thread in attackers:
        thread.start()
    try:
        deadline = time.monotonic() + 30
        while 429 not in guesses:  # the bcrypt queue is full
            assert time.monotonic() < deadline, guesses
            time.sleep(0.05)
        # the scraper's password is checked once, not once per scrape: none of these waits for bcrypt
        scrapes = [served.request("GET", "/metrics", headers=basic("prometheus", "scrape-pass"), timeout=5)[0]
                   for _ in range(20)]
    finally:
        stop.set()
        for thread in attackers:
            thread.join()
    assert scrapes == [200] * 20
    assert set(guesses) == {401, 429}
    counted = served.rejections(basic("prometheus", "scrape-pass"))
    assert (counted["unauthorized"], counted["auth_queue_full"]) == (guesses.count(401), guesses.count(429))


def test_a_flood_of_guesses_locks_no_one_out_across_a_reload(endpoint):
    """Sixteen connections guessing kept the bcrypt queue full; a reload dropped the passed checks,
    so the scraper got 429 on every try after it, and a user not seen yet (as every user after a
    restart) 10 of 10. Now passed checks of unchanged credentials survive the reload (the scraper
    shares the guessers' address here: only its remembered check lets it in), and the queue is
    shared by address: a newcomer's check waits behind at most one of the guessers'."""
    hashes = {user: bcrypt.hashpw(password, bcrypt.gensalt(rounds=10)).decode()
              for user, password in (("prometheus", b"scrape-pass"), ("grafana", b"dash-pass"))}
    served = endpoint("exporter: {web: {basic_auth_users: {prometheus: '%(prometheus)s', grafana: '%(grafana)s'}}}\n"
                      % hashes + LINKS)

    def scrape(user: str, password: str, source: str | None = None) -> int:
        return served.request("GET", "/metrics", headers=basic(user, password), timeout=60, source=source)[0]

    assert scrape("prometheus", "scrape-pass") == 200
    stop = threading.Event()
    guesses: list[int] = []

    def guess() -> None:
        while not stop.is_set():
            try:
                guesses.append(served.request("GET", "/metrics", headers=basic("prometheus", "guess"), timeout=10)[0])
            except OSError:  # a guess the server dropped: guess on
                guesses.append(0)

    def flooded() -> None:
        """Until a guess is refused 429 from now on: the bcrypt queue is full."""
        seen, deadline = len(guesses), time.monotonic() + 30
        while 429 not in guesses[seen:]:
            assert time.monotonic() < deadline, guesses[seen:]
            time.sleep(0.05)

    attackers = [threading.Thread(target=guess) for _ in range(16)]
    for thread in attackers:
        thread.start()
    try:
        flooded()
        before = [scrape("prometheus", "scrape-pass") for _ in range(5)]
        assert served.reloader.reload() == []  # what SIGHUP does; the credentials did not change
        flooded()
        after = [scrape("prometheus", "scrape-pass") for _ in range(5)]
        flooded()
        newcomer = [scrape("grafana", "dash-pass", "127.0.0.3") for _ in range(3)]
    finally:
        stop.set()
        for thread in attackers:
            thread.join()
    assert before == after == [200] * 5
    assert newcomer == [200] * 3


def test_unknown_users_cost_a_bcrypt_check_like_known_ones(endpoint, monkeypatch):
    """An unknown user's password is checked against a configured hash, so it takes the same
    time as a wrong password for a known user: both queue for bcrypt, and both are refused 429
    when the queue is full (the old server answered unknown users in 2.6 ms, known in 326 ms)."""
    monkeypatch.setattr(auth_module, "BCRYPT_QUEUE", 0)
    served = endpoint(users_config(cost=13), run=False)
    slow = threading.Thread(target=served.request, args=("GET", "/metrics"),
                            kwargs={"headers": basic("prometheus", "first"), "timeout": 60})
    slow.start()  # holds the one bcrypt worker for ~0.5-1 s
    try:
        deadline = time.monotonic() + 10
        while served.server._auth._running == 0:  # until its check is on the worker
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert served.request("GET", "/metrics", headers=basic("nobody", "x"))[0] == 429
        assert served.request("GET", "/metrics", headers=basic("prometheus", "x"))[0] == 429
    finally:
        slow.join()


@pytest.mark.parametrize("password", [b"p" * 73, b"p" * 4000, "pässwörd".encode() * 10])
def test_passwords_bcrypt_cannot_take_are_a_401_not_a_dropped_connection(endpoint, password):
    served = endpoint(users_config(cost=4), run=False)
    status, headers, _ = served.request("GET", "/metrics", headers=basic("prometheus", password))
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")


def test_a_72_byte_password_works(endpoint):
    served = endpoint(users_config(cost=4, password=b"k" * 72), run=False)
    assert served.request("GET", "/metrics", headers=basic("prometheus", b"k" * 72))[0] == 200


@pytest.mark.parametrize("header", ["Basic", "Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode(),
                                    "Basic " + base64.b64encode(b"\xff\xfe:x").decode(), "Bearer abc", "basic"])
def test_malformed_credentials_are_a_401(endpoint, header):
    served = endpoint(users_config(cost=4), run=False)
    assert served.request("GET", "/metrics", headers={"Authorization": header})[0] == 401


def test_probes_need_no_credentials_but_everything_else_does(endpoint):
    served = endpoint(users_config(cost=4))
    assert served.request("GET", "/-/healthy")[0] == 200
    assert served.request("GET", "/-/ready")[0] in (200, 503)
    for path in ("/metrics", "/", "/nowhere"):
        assert served.request("GET", path)[0] == 401
    assert served.request("GET", "/nowhere", headers=basic("prometheus", "scrape-pass"))[0] == 404
    assert served.request("POST", "/-/reload", headers=basic("prometheus", "scrape-pass"))[0] == 403  # no admin token
    counted = served.rejections(basic("prometheus", "scrape-pass"))
    assert (counted["unauthorized"], counted["control_plane_disabled"]) == (3, 1)  # a 404 is no rejection


def slow_request(port: int, context: ssl.SSLContext | None = None) -> socket.socket:
    """A client that sends the start of a request head and then nothing."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if context is not None:
        sock = context.wrap_socket(sock, server_hostname="localhost")
    sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    return sock


def threads(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:")))


def test_slow_clients_and_idle_handshakes_leave_scrapes_alone(start_exporter, tmp_path):
    """Row 4: 200 slow requests held 200 threads for 60 s, 100 idle TLS handshakes likewise, and the
    listen backlog was 5. Against a real `qtelemetry run` over TLS, with 200 half-sent requests and
    100 connections that never start their handshake open, scrapes are answered as usual: the
    client gives each one 5 s, half of the server's own wait limit."""
    pki = make_pki(tmp_path)
    exporter = start_exporter(f"exporter: {{web: {{tls_cert_file: {pki['server_cert']}, "
                              f"tls_key_file: {pki['server_key']}}}}}\n" + LINKS)
    context = ssl.create_default_context(cafile=str(pki["ca"]))
    port = int(exporter.url.split(":")[2].split("/")[0])
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(100)]
    slow = [slow_request(port, context) for _ in range(200)]
    try:
        for _ in range(5):
            with urllib.request.urlopen(exporter.url, context=context, timeout=5) as response:
                assert response.status == 200 and b"qlink_up" in response.read()
        # they cost the exporter a socket each, not a thread each
        assert threads(exporter.proc.pid) < 50
        assert exporter.proc.poll() is None
    finally:
        for sock in idle + slow:
            sock.close()


def test_clients_that_keep_the_server_waiting_are_closed(endpoint, monkeypatch, tmp_path):
    """A half-sent request head, an idle connection and a handshake that never starts are closed
    after the wait limit; a keep-alive connection gets the same limit between requests."""
    monkeypatch.setattr(server_module, "WAIT_TIMEOUT_S", 0.5)
    served = endpoint("exporter: {}\n" + LINKS, run=False)
    waiting = [slow_request(served.port), socket.create_connection(("127.0.0.1", served.port))]
    assert all(closed_by_server(sock, timeout=5.0) for sock in waiting)
    conn = served.connection()
    conn.request("GET", "/-/healthy")
    assert conn.getresponse().read() == b"OK\n"
    assert closed_by_server(conn.sock, timeout=5.0)
    assert len(served.server.connections) == 0
    assert served.rejections()["idle_timeout"] == 3


def test_idle_tls_handshakes_are_closed(endpoint, monkeypatch, tmp_path):
    monkeypatch.setattr(server_module, "WAIT_TIMEOUT_S", 0.5)
    pki = make_pki(tmp_path)
    served = endpoint(f"exporter: {{web: {{tls_cert_file: {pki['server_cert']}, tls_key_file: {pki['server_key']}}}}}\n"
                      + LINKS, run=False, context=ssl.create_default_context(cafile=str(pki["ca"])))
    idle = socket.create_connection(("127.0.0.1", served.port))
    assert closed_by_server(idle, timeout=5.0)
    assert served.request("GET", "/-/healthy")[0] == 200
    assert status_of(raw_exchange(served.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")) == 0  # plain HTTP
    counted = served.rejections()
    assert (counted["idle_timeout"], counted["tls_handshake"]) == (1, 1)


def test_when_connections_run_out_the_longest_waiting_one_makes_room(endpoint, monkeypatch):
    monkeypatch.setattr(server_module, "MAX_CONNECTIONS", 20)
    served = endpoint("exporter: {}\n" + LINKS, run=False)
    flood = [slow_request(served.port) for _ in range(60)]
    try:
        for _ in range(3):
            assert served.request("GET", "/-/healthy", timeout=5)[0] == 200
        assert len(served.server.connections) <= 20
        assert closed_by_server(flood[0], timeout=5.0)  # the oldest went first
        status, _, text = served.request("GET", "/metrics")
        own = parse_exposition(text)
        assert value(own, "qtelemetry_http_connections_limit") == 20
        assert value(own, "qtelemetry_http_connections") <= 20
        assert value(own, "qtelemetry_http_rejections_total", reason="connection_limit") >= 60 - 20
    finally:
        for sock in flood:
            sock.close()


def test_malformed_http_gets_an_answer(endpoint):
    served = endpoint("exporter: {}\n" + LINKS, run=False)
    for request in (b"GARBAGE\r\n\r\n", b"GET /metrics HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
                    b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n"):
        assert 400 <= status_of(raw_exchange(served.port, request)) < 500
