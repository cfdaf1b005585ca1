"""Parsers of ETSI GS QKD 014 and 015 documents: the standards' shapes read, everything else a clean rejection."""

from __future__ import annotations

import json
import math
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qtelemetry.drivers.base import DriverError
from qtelemetry.standards import etsi014
from qtelemetry.standards.documents import loggable
from qtelemetry.standards.etsi015 import link_report, parse_node

KEY_ID = "bc490419-7d60-487f-adc1-4ddcc177c139"
KEY = "wHHVxRwDJs3/bXd38GHP3oe4svTuRpZS0yCC7x4Ly+s="
#: Status as in ETSI GS QKD 014 V1.1.1 clause 6.1 (every member, the standard's names).
STATUS = {
    "source_KME_ID": "AAAABBBBCCCCDDDD", "target_KME_ID": "EEEEFFFFGGGGHHHH", "master_SAE_ID": "IIIIJJJJKKKKLLLL",
    "slave_SAE_ID": "MMMMNNNNOOOOPPPP", "key_size": 352, "stored_key_count": 25000, "max_key_count": 100000,
    "max_key_per_request": 128, "max_key_size": 1024, "min_key_size": 64, "max_SAE_ID_count": 0,
}
CONTAINER = {"keys": [{"key_ID": KEY_ID, "key": KEY}]}
LINK_ID = "9a8b7c6d-0000-4000-8000-000000000001"
#: An etsi-qkd-sdn-node tree in RFC 7951 JSON, shaped as ETSI GS QKD 015 V2.1.1 defines it.
NODE = {"etsi-qkd-sdn-node:qkd_node": {
    "qkdn_id": "00000000-0000-4000-8000-0000000000aa",
    "qkd_interfaces": {"qkd_interface": [
        {"qkdi_id": 7, "qkdi_model": "vendor/model", "qkdi_type": "etsi-qkd-node-types:DV-QKD",
         "qkdi_status": "etsi-qkd-node-types:UP"}]},
    "qkd_links": {"qkd_link": [
        {"qkdl_id": LINK_ID, "qkdl_enable": True, "qkdl_status": "etsi-qkd-node-types:ACTIVE",
         "qkdl_type": "etsi-qkd-node-types:PHYS",
         "qkdl_local": {"qkdn_id": "00000000-0000-4000-8000-0000000000aa", "qkdi_id": 7},
         "qkdl_remote": {"qkdn_id": "00000000-0000-4000-8000-0000000000bb", "qkdi_id": 3},
         "qkdl_performance": {"skr": 1500, "eskr": 1400, "expected_consumption": 256,
                              "phys_perf": [{"perf_type": "etsi-qkd-node-types:QBER", "value": "0.031"},
                                            {"perf_type": "etsi-qkd-node-types:SNR", "value": "17.5"}]}}]}}}


def reason(parse: Callable[[str], Any], document: Any) -> str:
    with pytest.raises(DriverError) as info:
        parse(document if isinstance(document, (str, bytes)) else json.dumps(document))
    return info.value.reason


def test_status_reads_every_member_of_clause_6_1():
    status = etsi014.parse_status(json.dumps({**STATUS, "status_extension": {"vendor": 1}}))
    assert (status.key_size, status.stored_key_count, status.max_key_count) == (352, 25000, 100000)
    assert status.slave_SAE_ID == "MMMMNNNNOOOOPPPP" and status.status_extension == {"vendor": 1}


@pytest.mark.parametrize("document, expected", [
    ("", "invalid_json"), ("{", "invalid_json"), (b"\xff\xfe{}", "invalid_json"), ("<html>503</html>", "invalid_json"),
    ([], "wrong_type"), ({k: v for k, v in STATUS.items() if k != "stored_key_count"}, "missing_field"),
    ({**STATUS, "key_size": "352"}, "wrong_type"), ({**STATUS, "key_size": 352.5}, "wrong_type"),
    ({**STATUS, "stored_key_count": True}, "wrong_type"), ({**STATUS, "slave_SAE_ID": 5}, "wrong_type"),
    ({**STATUS, "stored_key_count": -1}, "invalid_value"), ({**STATUS, "max_key_count": 10**30}, "invalid_value"),
])
def test_status_rejections_have_their_reason(document, expected):
    assert reason(etsi014.parse_status, document) == expected


def test_rejection_names_the_field_and_never_the_value():
    """A malformed key container must not carry key material or key IDs into a log line."""
    for container in ({"keys": [{"key_ID": KEY, "key": KEY_ID}]}, {"keys": [{"key_ID": KEY_ID, "key": 5}], "x": KEY},
                      {"keys": [{"key_ID": KEY_ID}]}, {"keys": KEY}):
        with pytest.raises(DriverError) as info:
            etsi014.parse_key_container(json.dumps(container))
        assert KEY not in str(info.value) and KEY_ID not in str(info.value)
        assert "keys" in str(info.value)
    container = etsi014.parse_key_container(json.dumps(CONTAINER))
    assert KEY not in repr(container) and KEY_ID not in repr(container)


@pytest.mark.parametrize("document, expected", [
    ({"keys": []}, "invalid_value"), ({"keys": [{"key_ID": "42", "key": KEY}]}, "wrong_type"),
    ({"keys": [{"key_ID": KEY_ID, "key": "not base64!"}]}, "wrong_type"), ({}, "missing_field"),
])
def test_key_container_rejections(document, expected):
    assert reason(etsi014.parse_key_container, document) == expected


def test_error_body_of_clause_6_5():
    error = etsi014.parse_error(json.dumps({"message": "key not found", "details": [{"key_ID": KEY_ID}]}))
    assert error.message == "key not found" and error.details == [{"key_ID": KEY_ID}]
    assert reason(etsi014.parse_error, {"details": []}) == "missing_field"


def test_loggable_redacts_key_ids_and_material_and_keeps_one_line():
    text = loggable(f"key {KEY_ID} = {KEY}\nlevel=ERROR forged")
    assert KEY_ID not in text and KEY not in text and "\n" not in text
    assert "<uuid>" in text and "<redacted>" in text and "forged" in text
    assert len(loggable("x" * 1000, 50)) <= 51


def test_node_report_of_a_link():
    report = link_report(parse_node(json.dumps(NODE)), LINK_ID.upper())
    assert (report.status, report.interface_status) == ("ACTIVE", "UP")
    assert (report.skr_bps, report.eskr_bps, report.expected_consumption_bps) == (1500, 1400, 256)
    assert report.phys_perf == {"QBER": 0.031, "SNR": 17.5} and report.unknown == ()


def test_node_reads_yang_prefix_identities_string_numbers_and_counts_foreign_identities():
    node = json.loads(json.dumps(NODE))
    link = node["etsi-qkd-sdn-node:qkd_node"]["qkd_links"]["qkd_link"][0]
    link["qkdl_status"] = "etsi-qkdn-types:PASSIVE"
    link["qkdl_local"]["qkdi_id"] = "7"  # uint32 read as a string too
    link["qkdl_performance"] = {"skr": "18446744073709551615", "eskr": 0.5,
                                "phys_perf": [{"perf_type": "acme-qkd:LASER_TEMPERATURE", "value": 21},
                                              {"perf_type": "etsi-qkdn-types:QBER", "value": 0}]}
    node["etsi-qkd-sdn-node:qkd_node"]["qkd_interfaces"]["qkd_interface"][0]["qkdi_status"] = "OUT-OF-ORDER"
    report = link_report(parse_node(json.dumps(node)), LINK_ID)
    assert report.status == "PASSIVE" and report.interface_status is None
    assert report.skr_bps == float(2**64 - 1) and report.eskr_bps == 0.5 and math.isnan(report.expected_consumption_bps)
    assert report.phys_perf == {"QBER": 0.0}
    assert [(leaf, str(value)) for leaf, value in report.unknown] == [
        ("perf_type", "acme-qkd:LASER_TEMPERATURE"), ("qkdi_status", "OUT-OF-ORDER")]


def _node_with(**link: Any) -> dict:
    node = json.loads(json.dumps(NODE))
    entry = node["etsi-qkd-sdn-node:qkd_node"]["qkd_links"]["qkd_link"][0]
    entry.update(link)
    return node


@pytest.mark.parametrize("document, expected", [
    ("", "invalid_json"), ({"qkd_node": NODE["etsi-qkd-sdn-node:qkd_node"]}, "missing_field"),
    ({"etsi-qkd-sdn-node:qkd_node": []}, "wrong_type"),
    ({"etsi-qkd-sdn-node:qkd_node": {"qkd_links": {"qkd_link": [{"qkdl_status": "etsi-qkd-node-types:OFF"}]}}},
     "missing_field"),
    (_node_with(qkdl_performance={"skr": "fast"}), "wrong_type"),
    (_node_with(qkdl_performance={"skr": -5}), "invalid_value"),
    (_node_with(qkdl_performance={"skr": True}), "wrong_type"),
    (_node_with(qkdl_status=5), "wrong_type"),
    (_node_with(qkdl_performance={"phys_perf": [{"perf_type": "etsi-qkd-node-types:QBER"}]}), "missing_field"),
    (_node_with(qkdl_performance={"phys_perf": [{"perf_type": "etsi-qkd-node-types:QBER", "value": "NaN"}]}),
     "wrong_type"),
    (_node_with(qkdl_performance={"phys_perf": [{"perf_type": "etsi-qkd-node-types:QBER", "value": "2.5"}]}),
     "invalid_value"),
    (_node_with(qkdl_performance={"phys_perf": [{"perf_type": "etsi-qkd-node-types:SNR", "value": 1},
                                                {"perf_type": "etsi-qkdn-types:SNR", "value": 2}]}), "invalid_value"),
    (_node_with(qkdl_id="00000000-0000-4000-8000-00000000ffff"), "unknown_link"),
    ({"etsi-qkd-sdn-node:qkd_node": {}}, "unknown_link"),
])
def test_node_rejections_have_their_reason(document, expected):
    assert reason(lambda body: link_report(parse_node(body), LINK_ID), document) == expected


# --- fuzz: any input is read or cleanly rejected, never another exception -----------------
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
                    max_leaves=10)


def _mutations(document: dict) -> st.SearchStrategy[Any]:
    """The document with one member somewhere replaced by arbitrary JSON, or removed."""
    def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
        children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        return [prefix] + [p for key, child in children for p in paths(child, prefix + (key,))]

    def mutate(path: tuple, replacement: Any, remove: bool) -> Any:
        copy = json.loads(json.dumps(document))
        if not path:
            return replacement
        parent = copy
        for key in path[:-1]:
            parent = parent[key]
        if remove and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = replacement
        return copy

    return st.builds(mutate, st.sampled_from(paths(document)), JSON, st.booleans())


def _only_clean_rejections(parse: Callable[[bytes], Any], body: bytes) -> None:
    try:
        parse(body)
    except DriverError as exc:
        assert exc.reason in ("invalid_json", "missing_field", "wrong_type", "invalid_value", "unknown_link")


FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BODIES = {
    "status": (etsi014.parse_status, STATUS),
    "key container": (etsi014.parse_key_container, CONTAINER),
    "error": (etsi014.parse_error, {"message": "m", "details": [{"a": 1}]}),
    "node": (lambda body: link_report(parse_node(body), LINK_ID), NODE),
}


@pytest.mark.parametrize("name", BODIES)
@FUZZ
@given(data=st.data())
def test_fuzzed_documents_are_read_or_cleanly_rejected(name, data):
    parse, document = BODIES[name]
    body = data.draw(st.one_of(
        st.binary(max_size=200),
        JSON.map(lambda value: json.dumps(value).encode()),
        _mutations(document).map(lambda value: json.dumps(value).encode()),
    ))
    _only_clean_rejections(parse, body)
