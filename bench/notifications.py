"""The pilot report's Alertmanager replay at fleet scale: a week of alerts of 1,000 and 10,000 links
through the recommended routing and the generated inhibit rules.

Each site of 40 links loses all of them once (QLinkSiteDown over forty QLinkDown, each with its
QBER and SLO symptoms), and one link in ten has a fibre cut of its own (QKDNoSignal over five
symptoms): seven alert instances per link. Printed: the replay's wall time, the notifications it
counts, and the time as a ratio of reading the same alerts' labels into a table (the least any
replay has to do), measured in the same run because the machine is noisy.

    python bench/notifications.py [--links 1000,10000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from qtelemetry.monitoring import alertmanager, causes, rules
from qtelemetry.monitoring.config import DEFAULT
from qtelemetry.report import notifications

WEEK, SITE_LINKS = 7 * 86400.0, 40


def week_of_alerts(links: int, rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for site in range(links // SITE_LINKS):
        out = rng.uniform(0, WEEK - 7200)
        common = {"cluster": "eu", "job": "qtelemetry", "site": f"s{site}"}
        rows.append(({**common, "alertname": "QLinkSiteDown", "severity": "critical"}, out + 300, out + 3600))
        for i in range(SITE_LINKS):
            link = {**common, "link": f"s{site}-l{i}", "instance": f"e{site}"}
            rows.append(({**link, "alertname": "QLinkDown", "severity": "critical"}, out + 300, out + 3600))
            rows.append(({**link, "alertname": "QKDKeySupplyErrorBudgetBurnSlow", "severity": "warning",
                          "slo": "qkd_key_supply"}, out + 900, out + 7200))
            if i % 10 == 0:
                cut = rng.uniform(0, WEEK - 14400)
                rows += [({**link, "alertname": name, "severity": severity, **extra}, cut + delay, cut + 10800)
                         for name, severity, delay, extra in (
                             ("QKDNoSignal", "critical", 120, {}), ("QKDQberCritical", "critical", 300, {"basis": "Z"}),
                             ("QKDQberCritical", "critical", 300, {"basis": "X"}),
                             ("QKDKeyBufferExhaustionImminent", "critical", 300, {}),
                             ("QKDKeySupplyErrorBudgetBurnFast", "critical", 120, {"slo": "qkd_key_supply"}))]
    return pd.DataFrame({"alertname": [r[0]["alertname"] for r in rows], "severity": [r[0]["severity"] for r in rows],
                         "link": [r[0].get("link", "") for r in rows], "alert_labels": [r[0] for r in rows],
                         "firing_at": [r[1] for r in rows], "resolved_at": [r[2] for r in rows]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--links", default="1000,10000", help="fleet sizes, comma-separated (multiples of 40)")
    args = parser.parse_args()
    config = notifications.parse_config(
        alertmanager.recommended(causes.inhibit_rules(rules.build(DEFAULT), DEFAULT), DEFAULT), "recommended")
    rng = np.random.default_rng(1)
    print(f"{'links':>7} {'alerts':>7} {'replay s':>9} {'x labels':>9} {'pages':>6} {'notifications':>14}")
    for links in (int(n) for n in args.links.split(",")):
        alerts = week_of_alerts(links, rng)
        t = time.perf_counter()
        pd.DataFrame.from_records(alerts["alert_labels"].tolist()).fillna("")
        baseline = time.perf_counter() - t
        t = time.perf_counter()
        notes = notifications.replay(alerts, config, WEEK)
        took = time.perf_counter() - t
        pages = int((notes["kind"].eq("new") & notes["page"]).sum())
        print(f"{links:>7} {len(alerts):>7} {took:>9.2f} {took / baseline:>9.0f} {pages:>6} {len(notes):>14}")


if __name__ == "__main__":
    main()
