"""`optalloc report`: a self-contained page whose charts a real browser renders."""

import re

import pytest

from conftest import INSTANCES, headless, run_cli
from optalloc.cli import run

SMALL = INSTANCES / "small_network"


@pytest.fixture(scope="module")
def solved(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "out"
    assert run(["solve", str(SMALL), "-o", str(out), "-q"]) == 0
    return out


def rendered(chromium: str, page) -> tuple[int, int, str]:
    """(charts on the page, charts the browser laid out, the DOM after load)."""
    dom = headless(chromium, "--virtual-time-budget=10000", "--dump-dom", page.as_uri())
    figures = len(re.findall(r'<figure class="chart"', dom))
    marked = re.search(r'data-charts-rendered="(\d+)"', dom)
    return figures, int(marked.group(1)) if marked else 0, dom


def test_every_chart_of_a_solved_period_renders_in_a_real_browser(solved, tmp_path, chromium):
    page = tmp_path / "report.html"
    assert run(["report", str(solved), "-o", str(page), "-q"]) == 0
    figures, shown, dom = rendered(chromium, page)
    # 3 rounds x 2 storage types of supply/demand curves, utilization, segments, fees/credits/net
    assert figures == 9 and shown == 9
    assert dom.count('data-rendered="true"') == 9
    for text in ("round 1, oversize", "clearing price $3.33", "capacity used", "baseline vs reserved", "reservation fee: $41,301"):
        assert text in dom, text


def test_the_page_is_self_contained_and_deterministic(solved, tmp_path):
    a, b = tmp_path / "a.html", tmp_path / "b.html"
    assert run(["report", str(solved), "-o", str(a), "-q"]) == 0
    assert run(["report", str(solved), "-o", str(b), "-q"]) == 0
    text = a.read_text()
    assert text == b.read_text()
    assert not re.search(r'<(script|img|link|iframe)[^>]+(src|href)=', text)  # nothing is fetched when it opens
    assert "<svg" in text and text.count("<svg") == 9


def test_a_stored_run_gets_its_record_and_its_periods(tmp_path, chromium):
    db = f"sqlite:///{tmp_path / 'store.db'}"
    assert run(["ingest", str(SMALL), "--db", db, "-q"]) == 0
    assert run(["batch", "--date", "2026-09-12", "--workers", "0", "--db", db, "-q"]) == 0
    page = tmp_path / "run2.html"
    assert run(["report", "2", "--db", db, "-o", str(page), "-q"]) == 0
    figures, shown, dom = rendered(chromium, page)
    assert figures == shown == 2 + 2  # round 1's two markets, utilization, segments (no settlement yet)
    assert "run 2 (batch, 2026-09-12)" in dom and "P202610 round 1" in dom


@pytest.mark.parametrize("source, message", [("nonsense", "neither an output folder nor a run id"), ("7", "no run 7 in the store"),
                                             ("²", "neither an output folder nor a run id"), ("٣", "neither an output folder nor a run id")])
def test_a_bad_source_is_a_clear_error(tmp_path, source, message):
    from optalloc.store import Store

    Store(f"sqlite:///{tmp_path}/s.db")  # an empty store: the run is what is missing
    done = run_cli("report", source, "--db", f"sqlite:///{tmp_path}/s.db", "-o", str(tmp_path / "r.html"))
    assert done.returncode == 2 and message in done.stderr
    assert not (tmp_path / "r.html").exists()


def test_a_stored_run_is_shown_as_it_stood_when_it_ended_and_an_ingest_is_titled_by_its_start(tmp_path):
    from optalloc.report import render
    from optalloc.scenario import load_store_run
    from optalloc.store import Store

    db = f"sqlite:///{tmp_path / 'store.db'}"
    assert run(["ingest", str(SMALL), "--db", db, "-q"]) == 0                                      # run 1
    assert run(["batch", "--date", "2026-09-12", "--workers", "0", "--db", db, "-q"]) == 0        # run 2: baseline, round 1
    assert run(["batch", "--date", "2026-09-30", "--workers", "0", "--db", db, "-q"]) == 0        # run 3: rounds 2, 3, settlement
    store = Store(db)
    ingest = load_store_run(store, 1)
    assert "(ingest, started " in ingest.heading and "None" not in ingest.heading
    assert ingest.periods[0].tables == {} and "as it stood when run 1 ended" in render(ingest)
    first = load_store_run(store, 2)
    assert first.heading == "optalloc report: run 2 (batch, 2026-09-12)"
    view = first.periods[0]
    assert sorted(set(view.tables["round_prices"].index.get_level_values("round"))) == [1]
    assert "settlement" not in view.tables and "settlement" not in view.summary
    assert "results of later runs are left out" in render(first)
    last = load_store_run(store, 3).periods[0]
    assert sorted(set(last.tables["round_prices"].index.get_level_values("round"))) == [1, 2, 3] and "settlement" in last.tables


def test_a_run_that_died_is_reported_as_killed_with_what_it_committed(tmp_path, real_process):
    """A batch killed inside round 2 wrote no steps: its report shows it killed, with the baseline and round 1 it
    committed before it died (the report read a missing steps record as a number: exit 1)."""

    db = f"sqlite:///{tmp_path / 'store.db'}"
    assert run(["ingest", str(SMALL), "--db", db, "-q"]) == 0
    died = real_process.run("batch", "--date", "2026-10-01", "--workers", "0", "--db", db, "-q", env={"OPTALLOC_FAILPOINT": "round-2-claimed:kill"})
    assert died.returncode == -9
    page = tmp_path / "run2.html"
    done = run_cli("report", "2", "--db", db, "-o", str(page), "-q")
    assert done.returncode == 0, done.stderr
    text = page.read_text()
    assert "killed" in text and "running" not in text
    assert "round 1, standard:" in text and "round 2," not in text  # round 1's charts, none of round 2 (rolled back)


# ---------------------------------------------------------------- the market chart tells what happened


def _tables(folder):
    import pandas as pd

    grants = pd.read_csv(folder / "grants.csv", keep_default_na=False, na_values=[""]).set_index(["round", "request_id"])
    pools = pd.read_csv(folder / "pools.csv").set_index(["round", "fc_id", "storage_type", "month"])
    prices = pd.read_csv(folder / "round_prices.csv").set_index(["round", "storage_type"])
    return grants, pools, prices


def test_the_chart_has_a_colour_for_every_reason_a_request_can_lose():
    from optalloc.clearing import data
    from optalloc.report import OUTCOMES

    reasons = {data.OUTBID, data.BELOW_RESERVE, data.MIN_CUBE, data.OVER_CAP, data.NO_POOL, data.EXHAUSTED}
    assert set(OUTCOMES) == reasons | {"granted"}
    assert len({colour for _, colour in OUTCOMES.values()}) == len(OUTCOMES)  # each told apart


def test_each_request_is_drawn_as_its_granted_cube_then_the_rest_by_its_reason(solved):
    """Round 2 standard of small_network: the green steps add up to the round's granted cube, every other colour to
    the cube its requests did not get for that reason, and the steps run highest fee first."""
    import numpy as np

    from optalloc.report import request_pieces

    grants, _, prices = _tables(solved)
    g = grants.loc[2]
    g = g[g["storage_type"] == "standard"].reset_index().sort_values(["max_fee_per_cube", "submitted_at", "request_id"],
                                                                        ascending=[False, True, True], kind="stable")
    edges, heights, kinds = request_pieces(g)
    widths = np.diff(edges)
    assert widths[kinds == "granted"].sum() == pytest.approx(prices.loc[(2, "standard"), "granted_cube"])
    lost = (g["max_cube"] - g["granted_cube"]).groupby(g["reason"]).sum()
    for reason, cube in lost.items():
        if reason:
            assert widths[kinds == reason].sum() == pytest.approx(cube), reason
    assert set(kinds[widths > 0]) == {"granted", "outbid", "pool_exhausted", "min_cube_did_not_fit"}
    assert (np.diff(heights) <= 0).all() and edges[-1] == pytest.approx(g["max_cube"].sum())


def test_the_pool_panel_marks_full_exactly_where_nothing_was_left(solved):
    import pandas as pd

    from optalloc.report import market_chart

    grants, pools, prices = _tables(solved)
    for (round_, storage_type) in prices.index:
        svg = market_chart(grants, pools, prices, round_, storage_type)
        p = pools.loc[round_].xs(storage_type, level="storage_type")
        full = int(((p["pool_after"] <= 1e-6) & (p["pool_cube"] > 0)).sum())
        assert len(re.findall(r">full<|>\s*full\s*<", svg)) == full, (round_, storage_type)
        assert f"round {round_}, {storage_type}: " in svg
        g = grants.loc[round_]
        lost = set(g.loc[(g["storage_type"] == storage_type) & (g["granted_cube"] < g["max_cube"]), "reason"].dropna())
        for reason in lost - {""}:
            from optalloc.report import OUTCOMES

            assert OUTCOMES[reason][0] in svg, (round_, storage_type, reason)  # in the legend
        price = prices.loc[(round_, storage_type), "clearing_price"]
        assert pd.isna(price) or f"clearing price ${price:,.2f}" in svg


def test_a_market_of_many_fcs_shows_its_fullest_and_says_so(solved):
    """A pool panel stays readable: past 24 FCs it shows the 24 fullest and says how many there are."""
    import pandas as pd

    from optalloc.report import market_chart

    grants, pools, prices = _tables(solved)
    p = pools.loc[[1]].reset_index()
    p = p[p["storage_type"] == "standard"]
    many = pd.concat([p.assign(fc_id=p["fc_id"] + f"-{i:02d}") for i in range(6)]).set_index(["round", "fc_id", "storage_type", "month"])
    svg = market_chart(grants, many, prices, 1, "standard")
    assert "(24 fullest of 36 FCs)" in svg
