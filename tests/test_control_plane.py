"""The control plane (/-/faults, /-/reload) attacked: tokens, bodies, numbers, log lines."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import bcrypt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from web import LINKS, TOKEN, raw_exchange, serve, status_of

from qtelemetry.exporter import server as server_module
from qtelemetry.exporter.auth import token_matches
from qtelemetry.exporter.server import Protection
from qtelemetry.exporter.webconfig import WebConfigFile


def controlled(tmp_path, extra: str = "") -> str:
    token = tmp_path / "admin.token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    return f"exporter:\n  admin_token_file: {token}\n{extra}" + LINKS


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_an_empty_admin_token_file_never_opens_the_control_plane(tmp_path):
    """The issue's case: an empty token file switched authentication off and a POST with no
    Authorization header injected a fiber cut. Now `run` refuses to start at all."""
    token = tmp_path / "admin.token"
    token.write_text("")
    config = tmp_path / "c.yaml"
    config.write_text(f"exporter: {{admin_token_file: {token}}}\n" + LINKS)
    done = subprocess.run([sys.executable, "-m", "qtelemetry", "run", "--config", str(config), "--listen", "127.0.0.1:0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "serving metrics" not in done.stderr
    assert "field=exporter.admin_token_file" in done.stderr and "the file is empty" in done.stderr
    # and whatever reaches the server, an empty token is never one that matches
    assert not token_matches(None, "") and not token_matches("Bearer ", "") and not token_matches("Bearer x", "")
    with pytest.raises(ValueError, match="empty admin token"):
        Protection(WebConfigFile(), None, "")


def test_a_token_file_emptied_while_running_is_a_rejected_reload(endpoint, tmp_path):
    served = endpoint(controlled(tmp_path))
    (tmp_path / "admin.token").write_text("")
    problems = served.reloader.reload()
    assert problems == [("exporter.admin_token_file", "the file is empty: an empty token would switch authentication off")]
    assert served.request("POST", "/-/faults", json.dumps({"link": "target", "kind": "fiber-cut"}))[0] == 401
    assert served.control("POST", "/-/faults", json.dumps({"link": "target", "kind": "fiber-cut"}))[0] == 200


def test_basic_auth_and_the_admin_token_work_together(endpoint, tmp_path):
    """Basic auth on /metrics and the admin token on the control plane, each reading its own scheme."""
    hashed = bcrypt.hashpw(b"scrape-pass", bcrypt.gensalt(rounds=4)).decode()
    served = endpoint(controlled(tmp_path, f"  web: {{basic_auth_users: {{prometheus: '{hashed}'}}}}\n"))
    fault = json.dumps({"link": "target", "kind": "fiber-bend"})
    assert served.request("GET", "/metrics", headers=basic("prometheus", "scrape-pass"))[0] == 200
    status, headers, _ = served.request("POST", "/-/faults", fault)  # no credentials at all
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    assert served.request("POST", "/-/faults", fault, basic("prometheus", "scrape-pass"))[0] == 401
    assert served.request("GET", "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 401
    assert served.control("POST", "/-/faults", fault, token=TOKEN + "x")[0] == 401
    status, _, body = served.control("POST", "/-/faults", fault)
    assert status == 200 and json.loads(body)["kind"] == "fiber-bend"
    assert served.control("DELETE", "/-/faults", json.dumps({"link": "target"}))[2] == '{"ended": 1}'
    # the report: `qtelemetry fault inject` got 401 as soon as basic auth was on
    done = subprocess.run([sys.executable, "-m", "qtelemetry", "fault", "inject", "--url", f"http://127.0.0.1:{served.port}",
                           "--token-file", str(tmp_path / "admin.token"), "--link", "target", "--kind", "fiber-cut"],
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (0, "") and done.stdout.startswith("injected fiber-cut on link target")


@pytest.mark.parametrize("body, reason", [
    ('{"link": "target", "kind": "fiber-bend", "magnitude": NaN}', "NaN is not a number JSON allows"),
    ('{"link": "target", "kind": "fiber-bend", "magnitude": Infinity}', "Infinity is not a number JSON allows"),
    ('{"link": "target", "kind": "fiber-bend", "magnitude": -Infinity}', "-Infinity is not a number JSON allows"),
    ('{"link": "target", "kind": "fiber-bend", "magnitude": 1e999}', "1e999 is not a finite number"),
    ('{"link": "target", "kind": "fiber-bend", "ramp_s": 1e999}', "1e999 is not a finite number"),
    ('{"link": "target", "kind": "fiber-bend", "start_s": 1e300}', "start_s: Input should be less than or equal to"),
    ('{"link": "target", "kind": "fiber-bend", "duration_s": 1' + "0" * 400 + '}', "duration_s: Input should be"),
    ('{"link": "target", "kind": "fiber-bend", "magnitude": 1' + "0" * 4000 + '}', "magnitude: Input should be a valid number"),
    ('{"link": "target", "kind": "fiber-bend", "magnitude": "3"}', "magnitude: Input should be a valid number"),
    ('{"link": "target", "kind": "fiber-bend", "magnitude": true}', "magnitude: Input should be a valid number"),
    ('{"link": "target", "kind": "fiber-bend", "ramp_s": "1"}', "ramp_s: Input should be a valid number"),
    ('{"link": "target", "kind": "fiber-bend", "duration_s": false}', "duration_s: Input should be a valid number"),
    ('["link", "target"]', "expected a JSON object"),
    ('{"link": 7, "kind": "fiber-cut"}', "link: expected the name of a simulated link"),
    ('{"link": "target", "kind": "fiber-cut"', "not valid JSON"),
    (b'{"link": "target\xff"}', "not valid JSON"),
])
def test_fault_api_refuses_what_is_not_a_finite_fault(endpoint, tmp_path, body, reason):
    served = endpoint(controlled(tmp_path), run=False)
    status, _, text = served.control("POST", "/-/faults", body)
    assert status == 400 and reason in text, text
    assert not served.runtime.snapshot.faults.any()


def test_deep_json_is_answered_400(endpoint, tmp_path):
    """The old server dropped the connection without an answer. Within the body limit the nesting
    either exceeds the interpreter's recursion limit or parses into a list: a 400 either way."""
    served = endpoint(controlled(tmp_path), run=False)
    for deep in ("[" * 2048 + "]" * 2048, '{"a":' * 680 + "1" + "}" * 680):
        status, _, text = served.control("POST", "/-/faults", deep)
        assert status == 400 and ("nested too deeply" in text or "expected a JSON object" in text
                                  or "link: expected" in text), text


def header_only(length: str | None, path: str = "/-/faults") -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: x", "Connection: close", f"Authorization: Bearer {TOKEN}"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize("length, status", [(None, 411), ("-1", 400), ("4000000000", 413), ("4e9", 400),
                                            ("abc", 400), ("5000", 413), ("12, 13", 400)])
def test_content_length_is_answered_at_once(endpoint, tmp_path, length, status):
    """Each answer comes before the client sends any body (the old server hung on -1 and 4e9)."""
    served = endpoint(controlled(tmp_path), run=False)
    assert status_of(raw_exchange(served.port, header_only(length), timeout=5.0)) == status
    assert served.rejections()["body_too_large"] == (status == 413)


def test_a_body_that_never_arrives_is_answered_408(endpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(server_module, "BODY_TIMEOUT_S", 0.3)
    served = endpoint(controlled(tmp_path), run=False)
    assert status_of(raw_exchange(served.port, header_only("100") + b'{"link"', timeout=5.0)) == 408
    assert served.rejections()["body_timeout"] == 1


def test_a_chunked_body_without_length_is_411(endpoint, tmp_path):
    served = endpoint(controlled(tmp_path), run=False)
    request = header_only(None).replace(b"\r\n\r\n", b"\r\nTransfer-Encoding: chunked\r\n\r\n") + b"2\r\n{}\r\n0\r\n\r\n"
    assert status_of(raw_exchange(served.port, request)) == 411


def test_nothing_a_client_sends_is_logged_unvalidated(endpoint, tmp_path, caplog):
    """Row 8: the DELETE `kind` was logged verbatim, and a forged `level=ERROR` line got written."""
    served = endpoint(controlled(tmp_path), run=False)
    forged = "fiber-cut\nts=2026-01-01T00:00:00Z level=ERROR msg=forged"
    with caplog.at_level("DEBUG"):
        assert served.control("DELETE", "/-/faults", json.dumps({"link": "target", "kind": forged}))[0] == 400
        assert served.control("DELETE", "/-/faults", json.dumps({"link": forged}))[0] == 400
        assert served.control("POST", "/-/faults", json.dumps({"link": forged, "kind": "fiber-cut"}))[0] == 400
        assert served.control("DELETE", "/-/faults", json.dumps({"link": "target", "note": forged}))[0] == 400
        assert served.control("DELETE", "/-/faults", json.dumps({"link": "target", "kind": "fiber-cut"}))[0] == 200
    logged = [r for r in caplog.records if r.name.startswith("qtelemetry")]
    assert not [r for r in logged if "forged" in r.getMessage() or "forged" in str(vars(r))]
    assert [(r.getMessage(), r.link, r.kind) for r in logged] == [("faults cleared", "target", "fiber-cut")]


def test_control_plane_methods_and_reload(endpoint, tmp_path):
    served = endpoint(controlled(tmp_path))
    status, headers, _ = served.control("GET", "/-/faults")
    assert status == 405 and headers["Allow"] == "POST, DELETE"
    assert served.control("GET", "/-/reload")[0] == 405
    assert served.request("POST", "/-/reload")[0] == 401
    assert served.control("POST", "/-/reload") == (200, served.control("POST", "/-/reload")[1], "config reloaded\n")
    (tmp_path / "config.yaml").write_text("links: []\n")
    status, _, text = served.control("POST", "/-/reload")
    assert status == 500 and "the previous one keeps running" in text and "links: List should have at least 1 item" in text


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(
    st.binary(max_size=300),
    st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
                 lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                 max_leaves=12).map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"link": st.sampled_from(["target", "bystander", "nowhere"]),
                           "kind": st.sampled_from(["fiber-cut", "visibility-drop", "bogus"])},
                          optional={"magnitude": st.floats(), "ramp_s": st.floats(), "start_s": st.floats(),
                                    "duration_s": st.floats() | st.none(), "extra": st.integers()})
    .map(lambda v: json.dumps(v).encode()),
), method=st.sampled_from(["POST", "DELETE"]))
def test_fault_api_fuzz_only_ever_answers_with_a_status_and_a_reason(fuzzed_endpoint, body, method):
    """Any body: a 200 for a valid fault, otherwise a 4xx with a reason; never a 5xx or a dropped connection."""
    status, _, text = fuzzed_endpoint.control(method, "/-/faults", body)
    assert status == 200 or (400 <= status < 500 and text.strip()), (status, text)


@pytest.fixture(scope="module")
def fuzzed_endpoint(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("fuzz")
    served = serve(tmp_path, controlled(tmp_path), run=False)
    yield served
    for stop in reversed(served.stops):
        stop()
