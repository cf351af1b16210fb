"""`optalloc report`: one self-contained HTML page showing what a run did.

Input: an output folder written by `optalloc solve` or `optalloc export` (one period), or a batch run in the store
(the periods it touched, with the run's record). Output: one HTML file with inline SVG charts (matplotlib) and
tables: nothing is fetched when the page is opened, so it can be mailed or archived as it is.

For each period:
- every round's market per storage type: its requests by fee, highest first, each coloured by what became of it
  (granted, or why not), the clearing price, and beside it the pools per FC x month, which of them filled;
- utilization of every FC, storage type and month: baseline limits placed, reserved grants, capacity;
- baseline vs reserved space per seller segment (sellers by baseline size, in quartiles);
- the distributions of reservation fees, credits and net amounts per grant;
- the top tables: round prices, the largest fees, paradoxically rejected requests.

The page is deterministic (same tables, same bytes). A small script marks each chart `data-rendered="true"` once
the browser has laid it out; the tests open the page in headless Chromium and count them.
"""

from __future__ import annotations

import html
import io as _io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import progress, tables, units
from .errors import InputError, Problem
from .io import read_json
from .results_io import RESULT_TABLES, read_result_table
from .outputs import WrittenThenInterrupted, replace_file

EPS = 1e-6
GENERATOR_TAG = '<meta name="generator" content="optalloc report">'
PAGE_START = '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">' + GENERATOR_TAG  # how every page begins: an existing file is ours if it does


@dataclass
class PeriodView:
    """What the page shows of one period: its summary.json-style dict and its result tables (any may be missing)."""

    summary: dict
    tables: dict[str, pd.DataFrame]

    @property
    def title(self) -> str:
        inst = self.summary.get("instance", {})
        return f"{inst.get('name', '')} — period {inst.get('period_id', '?')}"


@dataclass
class ReportData:
    heading: str
    periods: list[PeriodView]
    run: dict | None = None  # the run's record, when the report is of a stored run
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- loading


def load_output_folder(folder: str | os.PathLike) -> ReportData:
    """An output folder of `optalloc solve` / `optalloc export`."""
    folder = Path(folder)
    summary_path = folder / "summary.json"
    if not folder.is_dir() or not summary_path.exists():
        raise InputError(Problem("not an optalloc output folder (no summary.json); give a folder written by 'optalloc solve' or "
                                 "'optalloc export', or a run id with --db", str(folder)))
    summary = read_json(summary_path)
    _check_summary(summary, str(summary_path))
    tables = {name: t for name in RESULT_TABLES if (t := read_result_table(folder, name, required=False)) is not None}
    if not tables:
        raise InputError(Problem("no result tables (limits.csv, grants.csv, ...) in this folder", str(folder)))
    return ReportData(heading=f"optalloc report: {folder.name}", periods=[PeriodView(summary, tables)])


def _check_summary(summary: dict, source: str) -> None:
    """The parts of summary.json the page shows must have the types `optalloc solve` writes (else InputError)."""
    problems = []

    def number(v) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        return abs(v) < 1e300 if isinstance(v, int) else bool(np.isfinite(v))

    inst = summary.get("instance", {})
    if not isinstance(inst, dict):
        problems.append(Problem("must be an object", source, None, "instance"))
    else:
        for key in ("fcs", "sellers", "requests"):
            if key in inst and not (isinstance(inst[key], int) and not isinstance(inst[key], bool) and inst[key] >= 0):
                problems.append(Problem("must be a count (a whole number >= 0)", source, None, f"instance.{key}"))
        months = inst.get("months", ["?"])
        if not (isinstance(months, list) and months and all(isinstance(m, str) for m in months)):
            problems.append(Problem("must be a non-empty list of months", source, None, "instance.months"))
    st = summary.get("settlement")
    if st is not None:
        if not isinstance(st, dict):
            problems.append(Problem("must be an object", source, None, "settlement"))
        else:
            for key in ("reservation_fees", "credits", "net"):
                if not number(st.get(key)):
                    problems.append(Problem("must be a finite number", source, None, f"settlement.{key}"))
            if st.get("fully_offset_share") is not None and not number(st["fully_offset_share"]):
                problems.append(Problem("must be a finite number or null", source, None, "settlement.fully_offset_share"))
    if problems:
        raise InputError(problems)


# ---------------------------------------------------------------- charts (matplotlib -> inline SVG)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # text.parse_math off: labels are data (fc_id, seller_id, storage type) and '$' amounts, rendered literally,
    # never as mathtext (an id with '$' would otherwise crash the page or typeset as a formula).
    plt.rcParams.update({"svg.hashsalt": "optalloc", "svg.fonttype": "none", "font.size": 9, "axes.spines.top": False,
                         "axes.spines.right": False, "text.parse_math": False})
    return plt


def _svg(fig) -> str:
    buf = _io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None}, bbox_inches="tight")
    _pyplot().close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and doctype: inline SVG in HTML


# What became of each request's cube, with its colour (Okabe-Ito: told apart in colour-blind vision too) and what the
# legend says. The keys are the grant statuses' reasons (optalloc.clearing.data; tests/test_report.py keeps them in step).
OUTCOMES = {
    "granted": ("granted", "#009E73"),
    "outbid": ("outbid: higher fees took the space at its FCs", "#E69F00"),
    "pool_exhausted": ("its FCs' pool used up by earlier rounds", "#D55E00"),
    "no_eligible_pool": ("no pool at its FCs in all its months", "#0072B2"),
    "min_cube_did_not_fit": ("its min_cube did not fit", "#CC79A7"),
    "over_request_cap": ("asked more than its request cap", "#56B4E9"),
    "below_reserve": ("fee below the reserve price", "#999999"),
}
POOL_ROWS = 24  # FCs drawn in a market's pool panel; beyond it, the fullest


def request_pieces(ranked: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The market chart's steps: two pieces per request, in the order given (its granted cube, then the rest), as
    x edges (cumulative cube), heights (its fee) and kinds (an OUTCOMES key: "granted", or the request's reason)."""
    asked = ranked["max_cube"].to_numpy(float)
    granted = np.clip(ranked["granted_cube"].to_numpy(float), 0.0, asked)
    reason = ranked["reason"].fillna("").astype(str).to_numpy(object)
    widths = np.column_stack([granted, asked - granted]).ravel()
    kinds = np.column_stack([np.full(len(ranked), "granted", dtype=object), np.where(reason == "", "outbid", reason)]).ravel()
    return np.concatenate([[0.0], np.cumsum(widths)]), np.repeat(ranked["max_fee_per_cube"].to_numpy(float), 2), kinds


def market_chart(grants: pd.DataFrame, pools: pd.DataFrame, prices: pd.DataFrame, round_: int, storage_type: str) -> str:
    """One round's market of one storage type, as it was cleared with FC placement.

    Left: every request as a step at its fee, as wide as the cube it asked for, highest fee first (then earliest:
    the order the priority rule grants in); its granted part green, the rest coloured by why it was not granted; the
    clearing price dashed. Right: each FC's pool per month after the round, the share used by earlier rounds' grants
    and this round's, "full" where nothing is left: where a request above the price found no room."""
    plt = _pyplot()
    g = grants.reset_index()
    g = g[(g["round"] == round_) & (g["storage_type"] == storage_type)].sort_values(
        ["max_fee_per_cube", "submitted_at", "request_id"], ascending=[False, True, True], kind="stable")
    p = pools.reset_index()
    p = p[(p["round"] == round_) & (p["storage_type"] == storage_type)]
    fc_count = p["fc_id"].nunique()
    rows = min(fc_count, POOL_ROWS)
    fig, (ax, pax) = plt.subplots(1, 2, figsize=(8.6, max(3.6, 0.24 * rows + 1.6)), gridspec_kw={"width_ratios": [2.4, 1], "wspace": 0.35})

    fees, asked = g["max_fee_per_cube"].to_numpy(float), g["max_cube"].to_numpy(float)
    edges, heights, kinds = request_pieces(g)
    widths = np.diff(edges)
    for kind, (label, colour) in OUTCOMES.items():
        mask = (kinds == kind) & (widths > EPS)
        if mask.any():
            ax.stairs(np.where(mask, heights, np.nan), edges, fill=True, color=colour, label=label, linewidth=0)
    if len(g):  # each request's outline, so neighbours at one fee stay two requests
        ax.stairs(fees, np.concatenate([[0.0], np.cumsum(asked)]), color="#333333", linewidth=0.6)
    price = prices.loc[(round_, storage_type), "clearing_price"] if (round_, storage_type) in prices.index else np.nan
    if pd.notna(price):
        ax.axhline(price, color="#111111", linestyle="--", linewidth=1.2, label=f"clearing price ${price:,.2f}")
    ax.set_xlabel("cube asked (per month it names), highest fee first")
    ax.set_ylabel("fee offered, $ per cube")
    ax.set_title(f"round {round_}, {storage_type}: {int((g['granted_cube'] > EPS).sum())} of {len(g)} requests granted", loc="left")
    ax.set_xlim(0, float(edges[-1]) * 1.02 or 1.0)
    ax.set_ylim(0, (fees.max() if len(fees) else 1.0) * 1.1)
    ax.legend(fontsize=8, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)

    # Pools after the round: share used per FC x month ("full" where nothing is left; no pool drawn blank).
    used = (p["held_cube"] + p["granted_cube"]) / p["pool_cube"].where(p["pool_cube"] > EPS)
    share = used.clip(upper=1.0).groupby([p["fc_id"], p["month"]]).first().unstack("month")
    full = (p["pool_after"] <= EPS) & (p["pool_cube"] > EPS)
    full = full.groupby([p["fc_id"], p["month"]]).first().unstack("month").reindex_like(share).fillna(False)
    if len(share) > rows:
        order = share.mean(axis=1).sort_values(ascending=False, kind="stable").index[:rows]
        share, full = share.loc[sorted(order)], full.loc[sorted(order)]
    pax.imshow(share.to_numpy(float), cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    for (i, j), value in np.ndenumerate(share.to_numpy(float)):
        if np.isfinite(value):
            text = "full" if full.iat[i, j] else f"{value:.0%}"
            pax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if value > 0.6 else "#222222")
    pax.set_xticks(range(share.shape[1]), list(share.columns), fontsize=8)
    pax.set_yticks(range(share.shape[0]), list(share.index), fontsize=8)
    pax.tick_params(length=0)
    for side in pax.spines.values():
        side.set_visible(False)
    shown = "" if fc_count <= rows else f" ({rows} fullest of {fc_count} FCs)"
    pax.set_title(f"pool used after the round{shown}", loc="left")
    return _svg(fig)


def utilization_chart(fc_prices: pd.DataFrame, pools: pd.DataFrame) -> str:
    """Share of capacity used per FC (rows) and storage type x month (columns): baseline placed + reserved."""
    plt = _pyplot()
    fp = fc_prices.reset_index()
    if pools is not None and len(pools):
        last = pools.reset_index()
        last = last[last["round"] == last["round"].max()]
        reserved = (last["held_cube"] + last["granted_cube"]).groupby([last["fc_id"], last["storage_type"], last["month"]]).sum()
        fp["reserved"] = reserved.reindex(pd.MultiIndex.from_frame(fp[["fc_id", "storage_type", "month"]])).fillna(0.0).to_numpy()
    else:
        fp["reserved"] = 0.0
    fp["used"] = np.where(fp["capacity_cube"] > 0, (fp["baseline_cube"] + fp["reserved"]) / fp["capacity_cube"], 0.0)
    fp["col"] = fp["storage_type"] + " " + fp["month"]
    grid = fp.pivot_table(index="fc_id", columns="col", values="used", aggfunc="sum").sort_index()
    fig, ax = plt.subplots(figsize=(min(1.0 + 0.9 * grid.shape[1], 11), 0.9 + 0.32 * grid.shape[0]))
    im = ax.imshow(grid.to_numpy(), cmap="Blues", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(grid.shape[1]), grid.columns, rotation=35, ha="right")
    ax.set_yticks(range(grid.shape[0]), grid.index)
    if grid.size <= 400:
        for (i, j), v in np.ndenumerate(grid.to_numpy()):
            if not np.isnan(v):
                ax.text(j, i, f"{v:.0%}", ha="center", va="center", fontsize=7, color="white" if v > 0.6 else "black")
    ax.set_title("capacity used: baseline placed + reserved (last round), by FC")
    fig.colorbar(im, ax=ax, fraction=0.03, format=lambda v, _: f"{v:.0%}")
    return _svg(fig)


def segments(limits: pd.DataFrame, grants: pd.DataFrame) -> pd.DataFrame:
    """Sellers in quartiles of total baseline limit; per segment the baseline and reserved cube-months."""
    base = limits["limit_cube"].groupby(level="seller_id").sum()
    g = grants.reset_index() if grants is not None else pd.DataFrame(columns=["seller_id", "granted_cube", "months"])
    reserved = (g["granted_cube"] * g["months"].map(len)).groupby(g["seller_id"]).sum() if len(g) else pd.Series(dtype=float)
    frame = pd.DataFrame({"baseline": base, "reserved": reserved.reindex(base.index).fillna(0.0)})
    labels = ["smallest quarter", "second quarter", "third quarter", "largest quarter"]
    ranks = frame["baseline"].rank(method="first")
    frame["segment"] = pd.qcut(ranks, 4, labels=labels) if len(frame) >= 4 else labels[0]
    out = frame.groupby("segment", observed=False).agg(sellers=("baseline", "size"), baseline=("baseline", "sum"), reserved=("reserved", "sum"))
    out["reserved_share"] = np.where(out["baseline"] > 0, out["reserved"] / out["baseline"], 0.0)
    return out


def segment_chart(seg: pd.DataFrame) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 3.0))
    y = np.arange(len(seg))
    ax.barh(y - 0.2, seg["baseline"], height=0.4, color="#1f4e79", label="baseline limits")
    ax.barh(y + 0.2, seg["reserved"], height=0.4, color="#9ecae1", label="reserved (granted)")
    ax.set_yticks(y, [f"{s}\n({n} sellers)" for s, n in zip(seg.index, seg["sellers"])])
    ax.set_xlabel("cube-months")
    ax.set_title("baseline vs reserved space, sellers by baseline size")
    ax.legend(fontsize=7, frameon=False)
    return _svg(fig)


def money_chart(settlement: pd.DataFrame) -> str:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(9.5, 2.6), sharey=True)
    for ax, col, color in zip(axes, ["reservation_fee", "credit", "net"], ["#1f4e79", "#27ae60", "#c0392b"]):
        values = settlement[col].to_numpy(float)
        ax.hist(values, bins=min(30, max(5, len(values) // 3)), color=color)
        ax.set_title(f"{col.replace('_', ' ')}: ${units.text(units.total(values, units.MONEY), units.MONEY)} in all", fontsize=8)
        ax.set_xlabel("$ per grant")
    axes[0].set_ylabel("grants")
    return _svg(fig)


# ---------------------------------------------------------------- the page

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.5em} h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em} h3{font-size:1.05em}
.grid{display:flex;flex-wrap:wrap;gap:1em} figure.chart{margin:0;border:1px solid #eee;padding:.4em;background:#fff}
figure.chart svg{max-width:100%;height:auto} table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:.2em .5em;text-align:right} th{background:#f5f5f5} td:first-child,th:first-child{text-align:left}
.kpi{display:flex;gap:1.5em;flex-wrap:wrap}.kpi div{background:#f5f8fb;padding:.5em .8em;border-radius:4px}
.kpi b{display:block;font-size:1.2em} .note{color:#666;font-size:.85em}
"""

# Marks each chart once the browser has laid it out (a real bounding box): what the headless-browser test counts.
SCRIPT = """
window.addEventListener('load', function () {
  var n = 0;
  document.querySelectorAll('figure.chart').forEach(function (f) {
    var s = f.querySelector('svg');
    if (!s) return;
    var b = s.getBBox();
    if (b.width > 0 && b.height > 0 && s.querySelectorAll('path').length > 0) { f.setAttribute('data-rendered', 'true'); n++; }
  });
  document.body.setAttribute('data-charts-rendered', String(n));
});
"""


def _figure(svg: str, name: str) -> str:
    return f'<figure class="chart" data-chart="{html.escape(name)}">{svg}</figure>'


def _table(frame: pd.DataFrame, name: str, rename: dict[str, str] | None = None) -> str:
    """A table of the page, every number in its unit's decimals (`optalloc.units`: money to the cent, cube to 0.001)."""
    found = tables.units_of(name, frame)
    formatters = {(rename or {}).get(c, c): (lambda v, u=u: units.text(v, u)) for c, u in found.items() if frame[c].dtype.kind == "f"}
    return frame.rename(columns=rename or {}).to_html(border=0, formatters=formatters, na_rep="", escape=True)


def _kpis(items: list[tuple[str, str]]) -> str:
    return '<div class="kpi">' + "".join(f"<div>{html.escape(k)}<b>{html.escape(v)}</b></div>" for k, v in items) + "</div>"


def period_section(view: PeriodView) -> str:
    # Rounded as the output tables are, so a stored run and its exported folder show the same numbers.
    t, s = {name: tables.round_table(name, frame) for name, frame in view.tables.items()}, view.summary
    parts = [f"<h2>{html.escape(view.title)}</h2>"]
    inst = s.get("instance", {})
    kpis = [("months", f"{inst.get('months', ['?'])[0]} … {inst.get('months', ['?'])[-1]}"), ("FCs", str(inst.get("fcs", "?"))),
            ("sellers", f"{inst.get('sellers', 0):,}"), ("requests", f"{inst.get('requests', 0):,}")]
    if "settlement" in s:
        st = s["settlement"]
        kpis += [("reservation fees", f"${units.text(st['reservation_fees'], units.MONEY)}"), ("credits", f"${units.text(st['credits'], units.MONEY)}"),
                 ("net", f"${units.text(st['net'], units.MONEY)}"),
                 ("fees fully offset", f"{(st.get('fully_offset_share') or 0):.0%}")]
    parts.append(_kpis(kpis))

    if "grants" in t and "pools" in t and "round_prices" in t:
        parts.append("<h3>Each round's market, by storage type</h3>")
        parts.append('<p class="note">Left: every request of the round as a step at its fee, as wide as the cube it asked for, '
                     "highest fee first (then earliest: the order the priority rule grants in). Green: the cube it was granted; the "
                     "rest is coloured by why it was not. Dashed: the clearing price, the lowest fee granted, which every winner pays "
                     "at most. Right: each FC's pool per month after the round, the share used by earlier rounds' grants and this "
                     "round's. A request that lost above the price found its FCs full in one of its months (right), or its "
                     "min_cube did not fit.</p>")
        prices = t["round_prices"]
        charts = [_figure(market_chart(t["grants"], t["pools"], prices, int(r), str(k)), f"market {r} {k}") for r, k in prices.index]
        parts.append('<div class="grid">' + "".join(charts) + "</div>")
        parts.append(_table(prices.drop(columns=["objective"], errors="ignore"), "round_prices"))
    if "fc_prices" in t:
        parts.append("<h3>Utilization</h3>")
        parts.append(_figure(utilization_chart(t["fc_prices"], t.get("pools")), "utilization"))
    if "limits" in t:
        parts.append("<h3>Baseline vs reserved space</h3>")
        seg = segments(t["limits"], t.get("grants"))
        parts.append('<div class="grid">' + _figure(segment_chart(seg), "segments") + _table(seg, "segments", {"reserved_share": "reserved / baseline"})
                     + "</div>")
    if "settlement" in t and len(t["settlement"]):
        st = t["settlement"]
        parts.append("<h3>Fees, credits and net</h3>")
        parts.append(_figure(money_chart(st), "money"))
        parts.append("<h4>Largest reservation fees</h4>")
        top = st.sort_values(["reservation_fee", "seller_id"], ascending=[False, True], kind="stable").head(10)
        parts.append(_table(top[["seller_id", "storage_type", "granted_cube", "max_fee_per_cube", "fee_per_cube", "reservation_fee", "credit", "net"]],
                            "settlement"))
    if "grants" in t:
        para = t["grants"][t["grants"]["paradoxically_rejected"].astype(bool)]
        if len(para):
            parts.append("<h4>Rejected although their fee is above the price they faced</h4>")
            parts.append(_table(para[["seller_id", "storage_type", "max_fee_per_cube", "max_cube", "min_cube", "price_faced", "reason"]], "grants"))
    return "\n".join(parts)


def render(data: ReportData) -> str:
    body = [f"<h1>{html.escape(data.heading)}</h1>"]
    body += [f'<p class="note">{html.escape(n)}</p>' for n in data.notes]
    if data.run:
        r = data.run
        timings = json.loads(r.get("timings") or "{}")
        body.append(_kpis([("outcome", str(r.get("outcome"))), ("solver", f"{r.get('solver')} {r.get('solver_version')}"),
                           ("optalloc", str(r.get("optalloc_version"))), ("seconds", f"{sum(timings.values()):.1f}")]))
        if timings:
            body.append(_table(pd.DataFrame({"seconds": timings}).rename_axis("step"), "timings"))
    body += [period_section(v) for v in data.periods]
    return (
        PAGE_START + "<meta name=\"viewport\" content=\"width=device-width\">"
        f"<title>{html.escape(data.heading)}</title><style>{CSS}</style></head>\n<body>\n" + "\n".join(body) + f"\n<script>{SCRIPT}</script>\n</body></html>\n"
    )


def write_report(data: ReportData, out: str | os.PathLike, inputs: tuple = ()) -> Path:
    """Write the page atomically (a temporary file renamed into place); an existing file is replaced only if it is
    an optalloc report (it begins with PAGE_START)."""
    path = replace_file(out, render(data).encode("utf-8"), inputs=inputs, signature=PAGE_START)
    try:
        progress.wrote_file(out)
    except KeyboardInterrupt:  # the page is in place: say so, not "nothing was written"
        raise WrittenThenInterrupted(path) from None
    return path
