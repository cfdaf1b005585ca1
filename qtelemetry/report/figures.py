"""The report's figures, rendered with matplotlib (Agg) to PNG bytes for embedding as data URIs."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from qtelemetry.monitoring.config import Thresholds  # noqa: E402
from qtelemetry.report.tables import Series, availability_states  # noqa: E402

#: Colours of the availability states 0 no data, 1 available, 2 down, 3 up without key.
STATE_COLOURS = ("#c8c8c8", "#2e9e4f", "#d62728", "#ff9f1c")
STATE_NAMES = ("no data", "available", "down", "up, no key")


def _png(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _dates(series: Series) -> np.ndarray:
    return pd.to_datetime(series.ends, unit="s", utc=True).to_numpy()


def _axes(rows: int, title: str) -> tuple[plt.Figure, np.ndarray]:
    fig, axes = plt.subplots(rows, 1, figsize=(11, 1.9 * rows + 0.6), sharex=True, squeeze=False)
    fig.suptitle(title, x=0.01, ha="left", fontsize=12)
    return fig, axes[:, 0]


def _per_link(series: Series, name: str, title: str) -> tuple[plt.Figure, list, np.ndarray] | None:
    """One date-axis panel per link that has ``name``: (figure, [(axes, link)], dates); None if none has."""
    links = [link for link in series.links if series.has(name, link)]
    if not links:
        return None
    fig, axes = _axes(len(links), title)
    for ax in axes:
        _date_axis(ax)
    return fig, list(zip(axes, links)), _dates(series)


def _date_axis(ax: plt.Axes) -> None:
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d"))


def _outages(ax: plt.Axes, series: Series, link: str, dates: np.ndarray) -> None:
    """Shade the steps at which ``link`` was down or distilled nothing."""
    state = availability_states(series, link)
    ax.fill_between(dates, 0, 1, where=(state == 2) | (state == 3), step="pre", color=STATE_COLOURS[2], alpha=0.15,
                    lw=0, transform=ax.get_xaxis_transform(), label="outage")


def key_rate(series: Series) -> bytes | None:
    """Secret key rate of each key link against its plan, on a linear scale from 0 so that an outage
    (no key) shows as the drop it is, outages shaded. The repeaterless bound, orders of magnitude
    higher, is in the performance table instead."""
    panels = _per_link(series, "key_rate", "Secret key rate vs plan, bit/s (outages shaded)")
    if panels is None:
        return None
    fig, axes, dates = panels
    for ax, link in axes:
        _outages(ax, series, link, dates)
        ax.plot(dates, series.get("key_rate", link), lw=0.8, label="secret key rate")
        ax.plot(dates, series.get("plan_rate", link), "--", color="black", lw=1, label="plan")
        ax.set_ylim(bottom=0)
        ax.set_ylabel(link, fontsize=8)
    axes[0][0].legend(loc="lower left", fontsize=7, ncol=3)
    return _png(fig)


def qber(series: Series, thresholds: Thresholds) -> bytes | None:
    """Z-basis QBER and its upper confidence bound with the alert thresholds."""
    panels = _per_link(series, "qber", "QBER (Z basis) and its upper confidence bound, with the alert thresholds")
    if panels is None:
        return None
    fig, axes, dates = panels
    for ax, link in axes:
        _outages(ax, series, link, dates)
        ax.plot(dates, series.get("qber", link) * 100, lw=0.8, label="QBER")
        ax.plot(dates, series.get("qber_upper", link) * 100, lw=0.6, alpha=0.7, label="upper bound")
        for value, colour, name in ((thresholds.qber_warning, "#ff9f1c", "warning"),
                                    (thresholds.qber_critical, "#d62728", "critical"),
                                    (thresholds.qber_no_key, "black", "no key")):
            ax.axhline(value * 100, color=colour, lw=0.8, ls="--", label=name)
        ax.set_ylabel(f"{link}\n%", fontsize=8)
    axes[0][0].legend(loc="upper left", fontsize=7, ncol=5)
    return _png(fig)


def key_store(series: Series) -> bytes | None:
    """Key store level of each link as a fraction of its capacity."""
    links = [l for l in series.links if series.has("buffer", l)]
    if not links:
        return None
    fig, ax = plt.subplots(figsize=(11, 3))
    dates = _dates(series)
    for link in links:
        ax.plot(dates, 100 * series.get("buffer", link) / series.get("capacity", link), lw=1, label=link)
    ax.set_ylabel("key store fill, %")
    ax.set_ylim(-2, 102)
    ax.set_title("Key store level (0%: applications fall back to classical key exchange)", loc="left", fontsize=12)
    ax.legend(fontsize=7, ncol=4)
    _date_axis(ax)
    return _png(fig)


def availability_strip(series: Series) -> bytes:
    """One strip per link: available, down, up without key, no data."""
    links = series.links
    states = np.vstack([availability_states(series, link) for link in links]) if links else np.zeros((1, 1))
    fig, ax = plt.subplots(figsize=(11, 0.45 * max(1, len(links)) + 1.1))
    start, end = mdates.date2num(_dates(series)[[0, -1]])
    ax.imshow(states, aspect="auto", interpolation="nearest", cmap=ListedColormap(STATE_COLOURS), vmin=0, vmax=3,
              extent=(start, end, len(links) - 0.5, -0.5))
    ax.set_yticks(range(len(links)), links, fontsize=8)
    ax.xaxis_date()
    _date_axis(ax)
    ax.set_title("Availability per link", loc="left", fontsize=12)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in STATE_COLOURS]
    ax.legend(handles, STATE_NAMES, fontsize=7, ncol=4, loc="upper right", bbox_to_anchor=(1, -0.25))
    return _png(fig)


def daily_key(daily: pd.DataFrame) -> bytes | None:
    """Key delivered and requested per day, per link (bars)."""
    if daily.empty:
        return None
    links = sorted(daily["link"].unique())
    fig, axes = _axes(len(links), "Key delivered vs requested per day, Mbit")
    for ax, link in zip(axes, links):
        part = daily[daily["link"] == link]
        x = np.arange(len(part))
        ax.bar(x - 0.2, part["requested_bits"] / 1e6, 0.4, label="requested", color="#9ecae1")
        ax.bar(x + 0.2, part["delivered_bits"] / 1e6, 0.4, label="delivered", color="#3182bd")
        ax.set_xticks(x, part["day"].str[5:], fontsize=7)
        ax.set_ylabel(link, fontsize=8)
    axes[0].legend(fontsize=7)
    return _png(fig)
