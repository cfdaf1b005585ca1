"""Alerts of the network view (``qnet_``): key demands between sites, and their runbooks.

One rule group of their own (``qtelemetry-network``). They are about a demand (scope
``demand``): the worse one mutes the milder for the same demand (disconnected > unmet >
redundancy lost, relay short), and the exporter or analyser that computes them being down mutes them all.

The capacities are each demand's own (demands do not share a link's rate in the analysis), so
demands competing for the same hops can all be "met" while the simulated key relay cannot serve
them together: QNetDemandRelayShort watches what the relay actually delivered.

An unmet demand pages only when its priority (``qnet_demand_priority``) is at least
``page_demand_priority`` (monitoring config); below that, QNetDemandUnmetLowPriority opens a ticket
instead (generated only when the floor is above 0, the lowest priority). A demand whose priority
is not known (an exporter without the metric) pages: missing data never silences a page.
"""

from __future__ import annotations

from dataclasses import replace

from qtelemetry.monitoring.config import MonitoringConfig

FALLBACK = ("Protect the applications first: tell the owners of the demand's applications to switch to their "
            "fallback key exchange (classical or post-quantum, e.g. an ML-KEM hybrid) until the demand is met "
            "again, so that no session waits for QKD key.")
#: A relayed demand is short when it gets less than this share of the key it requested over 10
#: minutes (1 % for the windows a 10-minute rate cuts at its edges).
RELAY_DELIVERED_MIN = 0.99
ROUTE = ("Find what limits it: the links of the demand's minimum cut (`qnet_link_min_cut`) and the widest route's "
         "hops; the Network dashboard highlights them. Fix first the link or site with the highest failure impact "
         "(`qnet_link_failure_impact_demands`, `qnet_site_failure_impact_demands`): it serves the most demands.")


def network_alerts(c: MonitoringConfig) -> list:
    from qtelemetry.monitoring.rules import Alert, by, num

    t = c.thresholds
    demand = by(c, "instance", "demand")
    multipath = 'max without (routing) (qnet_demand_capacity_bits_per_second{routing="multipath"})'
    need = f"on ({demand}) group_left (src, dst) qnet_demand_bits_per_second"
    unmet = f"{multipath}\n< {need}"
    floor = c.page_demand_priority
    below = f"on ({demand})\nqnet_demand_priority < {floor}"
    unmet_description = (
        "The multipath capacity between [[src]] and [[dst]] over trusted nodes is [[value]] bits/s, below what demand "
        "[[demand]] needs (qnet_demand_bits_per_second): its applications are drawing down stored key or waiting for it.")
    low_priority = [Alert(
        "QNetDemandUnmetLowPriority", f"{unmet}\nand {below}", "5m", "warning",
        summary="The network cannot relay the key low-priority demand [[demand]] needs.",
        description=f"{unmet_description} Its priority is below {floor}, the floor that pages.",
        scope="demand", inhibits=("QNetRedundancyLost", "QNetDemandRelayShort"), dashboard="network")] if floor else []
    return [
        Alert("QNetDemandDisconnected", f"{multipath} == 0", "2m", "critical",
              summary="Sites [[src]] and [[dst]] cannot exchange QKD key (demand [[demand]]).",
              description=(
                  "No chain of links producing key joins [[src]] and [[dst]] over trusted nodes: demand [[demand]] "
                  "gets no key at all. Its applications run on their fallback key exchange."),
              scope="demand", inhibits=("QNetDemandUnmet", *(a.alert for a in low_priority), "QNetRedundancyLost",
                                        "QNetStoredKeyLow", "QNetDemandRelayShort"),
              dashboard="network"),
        Alert("QNetDemandUnmet", f"{unmet}\nunless {below}" if floor else unmet, "5m", "critical",
              summary="The network cannot relay the key demand [[demand]] needs.",
              description=unmet_description,
              scope="demand", inhibits=("QNetRedundancyLost", "QNetDemandRelayShort"), dashboard="network"),
        *low_priority,
        Alert("QNetRedundancyLost",
              f"qnet_demand_capacity_after_worst_failure_bits_per_second\n< {need}\n"
              f"unless on ({demand})\n{multipath}\n< {need}",
              "10m", "warning",
              summary="Key demand [[demand]] is one failure away from going unmet.",
              description=(
                  "If [[failure_kind]] [[failure]] failed, the capacity between [[src]] and [[dst]] would fall to "
                  "[[value]] bits/s, below what demand [[demand]] needs: that single failure is an outage."),
              scope="demand", dashboard="network"),
        Alert("QNetDemandRelayShort",
              "rate(qnet_demand_delivered_bits_total[10m])\n/ rate(qnet_demand_requested_bits_total[10m])\n"
              f"< {num(RELAY_DELIVERED_MIN)}", "10m", "warning",
              summary="The simulated key relay delivers less key than demand [[demand]] requests.",
              description=(
                  "Over 10 minutes the simulated relay delivered [[value%]] of the key demand [[demand]] requested "
                  "(qnet_demand_delivered_bits_total against requested), although the network's capacity for the "
                  "demand alone is enough: other demands take the same hops' key first or at the same time."),
              scope="demand", dashboard="network"),
        Alert("QNetDemandCapacityUnknown",
              f"qnet_demand_bits_per_second\nunless on ({demand})\nqnet_demand_capacity_bits_per_second", "10m", "warning",
              summary="The network analysis gives no capacity for demand [[demand]]: its capacity alerts cannot fire.",
              description=(
                  "The exporter (or qtelemetry network) serves demand [[demand]] between [[src]] and [[dst]] but no "
                  "capacity for it: its network analyses fail (qnet_analysis_failures_total, or qnet_analyser_up 0), "
                  "and a failed analysis withdraws its figures rather than show old ones. Until one succeeds, "
                  "QNetDemandDisconnected and QNetDemandUnmet cannot fire for this demand."),
              scope="demand", dashboard="network"),
        Alert("QNetStoredKeyLow", f"qnet_demand_stored_key_seconds < {num(t.stored_key_floor_seconds)}", "10m",
              "warning",
              summary="Key stored for demand [[demand]] would not last long without the links.",
              description=(
                  "If every link stopped producing now, the key already in the links' stores would serve demand "
                  f"[[demand]] for [[value_duration]] (floor {num(t.stored_key_floor_seconds)} s): an outage would "
                  "reach its applications quickly."),
              scope="demand", dashboard="network"),
    ]


def network_runbooks(c: MonitoringConfig) -> dict:
    from qtelemetry.monitoring.runbooks import Runbook

    D = '{demand="<demand>"}'
    confirm = (f"qnet_demand_capacity_bits_per_second{D}", f"qnet_demand_bits_per_second{D}",
               f"qnet_link_min_cut{D}", f"qnet_demand_capacity_after_worst_failure_bits_per_second{D}")
    unmet = Runbook(
        meaning=("The maximum key rate the network can relay between the demand's sites (max-flow over trusted "
                 "nodes, all routes together) is below what its applications need."),
        impact=("The applications consume key faster than it arrives: their stored key runs out in "
                "`qnet_demand_stored_key_seconds` at most, then requests are refused."),
        confirm=(*confirm, f"qnet_demand_stored_key_seconds{D}", f"qnet_demand_priority{D}"),
        mitigation=(FALLBACK, ROUTE,
                    "Raise capacity across the minimum cut (realign or repair its links, add a parallel link) or "
                    "lower the demand (longer re-key intervals)."),
        escalate="Page the owners of the minimum cut's links; capacity planning if the cut is healthy but too small.",
    )
    return {
        "QNetDemandDisconnected": Runbook(
            meaning=("Every route between the demand's two sites crosses a link that produces no key (down, or no "
                     "secret key) or a site that cannot relay: the multipath capacity is 0."),
            impact="The demand's applications get no QKD key at all until a route comes back.",
            confirm=(*confirm, "qlink_up == 0", "qnet_link_usable_key_rate_bits_per_second == 0"),
            mitigation=(FALLBACK, "The links of the minimum cut are the down links that separate the two sites: "
                        "restore any one of them and the demand is connected again. " + ROUTE),
            escalate="Page the owners of the links in the minimum cut (their QLinkDown runbooks) and the application owners.",
        ),
        "QNetDemandUnmet": unmet,
        **({"QNetDemandUnmetLowPriority": replace(
            unmet, meaning=unmet.meaning + f" The demand's priority is below {c.page_demand_priority}, the "
                                          "floor that pages (`page_demand_priority` in the monitoring config), so it is a ticket.",
            escalate=("Ticket to the network owner; it pages if the demand's priority is raised to the floor. Repair "
                      "paging demands first: they share the minimum cut's links and the relay serves them first."))}
           if c.page_demand_priority else {}),
        "QNetRedundancyLost": Runbook(
            meaning=("The demand is met now, but after the worst single failure of a link or of a trusted site "
                     "(named in the alert: `failure_kind`, `failure`) it would not be: that element is a single point "
                     "of failure for the demand."),
            impact="No impact yet; one more failure (the named one) and the demand goes unmet.",
            confirm=(*confirm, f"qnet_demand_disjoint_paths{D}",
                     'qnet_link_failure_impact_demands > 0', 'qnet_site_failure_impact_demands > 0'),
            mitigation=("Check whether a redundant route went down (QLinkDown on another route): restoring it "
                        "restores the redundancy. " + ROUTE,
                        "Warn the application owners that their fallback key exchange may be needed at short notice.",
                        "For a permanent single point of failure, plan a second route (qtelemetry plan)."),
            escalate="Ticket to the network owner; page only if the named element is itself degrading.",
        ),
        "QNetDemandRelayShort": Runbook(
            meaning=("The simulated key relay (network.routing with simulated links) delivered less of the demand's "
                     "key than its applications requested, while the capacity view, which gives each demand the whole "
                     "network, says it could be met: demands that share hops are competing for their key."),
            impact="The demand's applications draw down stored key or wait; in a drill, the report counts the shortfall.",
            confirm=(f"rate(qnet_demand_delivered_bits_total{D}[10m])", f"rate(qnet_demand_requested_bits_total{D}[10m])",
                     f"qnet_demand_relay_route_hops{D}", f"qnet_demand_priority{D}", "qkd_key_buffer_bits"),
            mitigation=("Find the hops the short demands share (the Network dashboard's routes) and what else they carry.",
                        "Give the demand that must not wait a higher priority (the relay serves higher priorities "
                        "first), use routing: multipath, or add capacity on the shared hops (a parallel link)."),
            escalate="Ticket to the network owner; plan the shared hops for the sum of their demands (qtelemetry plan-network).",
        ),
        "QNetDemandCapacityUnknown": Runbook(
            meaning=("The network analysis has given no capacity for the demand for 10 minutes: every analysis in "
                     "that time failed (each failure withdraws the previous figures, so that they are never shown as "
                     "current), or the analyser cannot read Prometheus."),
            impact=("No impact on the key itself, but the demand is unwatched: QNetDemandDisconnected, QNetDemandUnmet "
                    "and QNetRedundancyLost cannot fire for it until an analysis succeeds."),
            confirm=("increase(qnet_analysis_failures_total[15m])", "qnet_analysis_age_seconds",
                     "qnet_analysis_duration_seconds", "qnet_analyser_up", "qnet_analyser_errors_total",
                     f"qnet_demand_capacity_bits_per_second{D}"),
            mitigation=("By the failures' reason: `process_died`, the analysis process was killed (the exporter's "
                        "memory limit, `qtelemetry_memory_limit_bytes`: raise it); `timeout`, an analysis overran its "
                        "interval and a minute (a large network on a busy machine: raise "
                        "`network.analysis_interval_seconds`, or give the exporter CPU); `error`, the exporter's log "
                        "has the traceback (report it). For `qtelemetry network`: `qnet_analyser_errors_total` by reason.",
                        "Meanwhile watch the demand's links directly: their QLinkDown and key-rate alerts still fire."),
            escalate="Ticket to whoever runs the exporter; page only if a link of the demand is down as well.",
        ),
        "QNetStoredKeyLow": Runbook(
            meaning=("The key already in the links' stores, relayed over the network (max-flow of the stored bits), "
                     "would serve the demand for less than the configured floor if every link stopped now."),
            impact="An outage of the links would reach the demand's applications within that time.",
            confirm=(f"qnet_demand_stored_key_seconds{D}", "qkd_key_buffer_bits", f"qnet_link_min_cut{D}"),
            mitigation=("Let the stores refill: reduce consumption or raise generation on the minimum cut's links.",
                        "Check the key-buffer alerts of those links (QKDKeyBufferExhaustionForecast, QKDKeyBufferExhaustionImminent)."),
            escalate="Ticket to the network owner.",
        ),
    }


def network_cases(c: MonitoringConfig) -> list:
    """promtool cases of the network alerts (a firing and a silent one at least, each); with a
    paging floor above 0, both sides of it."""
    from qtelemetry.monitoring.promtool_tests import Case, Fires

    ends = {"demand": "gov-uplink", "src": "dc-north", "dst": "gov-facility"}
    need = 'qnet_demand_bits_per_second{demand="gov-uplink", src="dc-north", dst="gov-facility"}'
    multipath = 'qnet_demand_capacity_bits_per_second{demand="gov-uplink", routing="multipath"}'
    single = 'qnet_demand_capacity_bits_per_second{demand="gov-uplink", routing="single_path"}'
    after = ('qnet_demand_capacity_after_worst_failure_bits_per_second{demand="gov-uplink", failure_kind="link", '
             'failure="longhaul-100km"}')
    stored = 'qnet_demand_stored_key_seconds{demand="gov-uplink"}'
    requested, delivered = (f'qnet_demand_{kind}_bits_total{{demand="gov-uplink"}}' for kind in ("requested", "delivered"))
    named = {**ends, "failure_kind": "link", "failure": "longhaul-100km"}
    return [
        Case("QNetDemandDisconnected", "capacity 0 for 10 minutes", {
            need: "200x20", multipath: "500x5 0x15", single: "500x5 0x15"}, "12m", (Fires({"demand": "gov-uplink"}),)),
        Case("QNetDemandDisconnected", "low but connected", {need: "200x20", multipath: "50x20"}, "12m"),
        Case("QNetDemandUnmet", "capacity 100 of 200 bit/s for 10 minutes", {
            need: "200x20", multipath: "500x5 100x15", single: "500x5 80x15"}, "12m", (Fires(ends, 100),)),
        Case("QNetDemandUnmet", "a 3-minute dip", {need: "200x20", multipath: "500x5 100x3 500x12"}, "12m"),
        Case("QNetRedundancyLost", "a single point of failure for 15 minutes", {
            need: "200x20", multipath: "500x20", after: "0x20"}, "15m", (Fires(named, 0),)),
        Case("QNetRedundancyLost", "survives the worst failure", {
            need: "200x20", multipath: "500x20", after.replace("longhaul-100km", "regional-50km"): "300x20"}, "15m"),
        Case("QNetRedundancyLost", "already unmet: QNetDemandUnmet's", {
            need: "200x20", multipath: "100x20", after: "0x20"}, "15m"),
        Case("QNetDemandRelayShort", "half the requested key delivered for 15 minutes", {
            requested: "0+6000x30", delivered: "0+6000x10 60000+3000x20"}, "25m", (Fires({"demand": "gov-uplink"}, 0.5),)),
        Case("QNetDemandRelayShort", "every requested bit delivered", {requested: "0+6000x30", delivered: "0+6000x30"}, "25m"),
        Case("QNetDemandRelayShort", "nothing requested", {requested: "0x30", delivered: "0x30"}, "25m"),
        Case("QNetDemandCapacityUnknown", "no capacity for 18 minutes (the analyses fail)", {
            need: "200x25", multipath: "500x2 _x23", single: "500x2 _x23"}, "20m", (Fires(ends),)),
        Case("QNetDemandCapacityUnknown", "a capacity, even 0", {need: "200x25", multipath: "0x25"}, "20m"),
        Case("QNetDemandCapacityUnknown", "a 10-minute gap", {need: "200x25", multipath: "500x3 _x10 500x11"}, "20m"),
        Case("QNetStoredKeyLow", "stored key for 100 s", {stored: "100x20"}, "15m",
             (Fires({"demand": "gov-uplink"}, 100),)),
        Case("QNetStoredKeyLow", "stored key for two hours", {stored: "7200x20"}, "15m"),
        *(priority_cases(c.page_demand_priority, need, multipath, ends) if c.page_demand_priority
          else ()),
    ]


def priority_cases(floor: int, need: str, multipath: str, ends: dict) -> list:
    """An unmet demand at the paging floor pages, one below it opens a ticket, one whose priority
    is not known pages."""
    from qtelemetry.monitoring.promtool_tests import Case, Fires

    priority = 'qnet_demand_priority{demand="gov-uplink"}'
    unmet = {need: "200x20", multipath: "500x5 100x15"}
    return [
        Case("QNetDemandUnmet", f"priority {floor}, the floor: pages", {**unmet, priority: f"{floor}x20"}, "12m",
             (Fires(ends, 100),)),
        Case("QNetDemandUnmet", "priority not known: pages", unmet, "12m", (Fires(ends, 100),)),
        Case("QNetDemandUnmet", f"priority {floor - 1}, below the floor: a ticket instead",
             {**unmet, priority: f"{floor - 1}x20"}, "12m"),
        Case("QNetDemandUnmetLowPriority", f"priority {floor - 1}, below the floor", {**unmet, priority: f"{floor - 1}x20"},
             "12m", (Fires(ends, 100),)),
        Case("QNetDemandUnmetLowPriority", f"priority {floor}: QNetDemandUnmet's", {**unmet, priority: f"{floor}x20"}, "12m"),
        Case("QNetDemandUnmetLowPriority", "met", {need: "200x20", multipath: "500x20", priority: "0x20"}, "12m"),
    ]
