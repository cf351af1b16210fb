"""Numbers as optalloc writes them (optalloc/units.py, issue #13 "float noise in outputs"): every number column of
every written table has a declared unit, money is shown to the cent and cube to 0.001 in every table, JSON and
message, and every total is exactly the sum of the rows shown."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from conftest import INSTANCES, run_cli
from optalloc import tables, units
from optalloc.cli import run
from optalloc.results_io import write_tables

SMALL = INSTANCES / "small_network"
NUMBER = re.compile(r"^-?\d+(?:\.(\d+))?$")


def cli(*args: str):
    return run_cli(*args, "-q")


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, object]:
    """Output folders of every command that writes tables, on shipped instances and small seeded ones."""
    tmp = tmp_path_factory.mktemp("units")
    out = {}
    for name, args in [
        ("solve", ["solve", str(SMALL)]),
        ("worked_example", ["solve", str(INSTANCES / "worked_example.json")]),
        ("allocate", ["allocate", str(SMALL)]),
        ("clear", ["clear", str(SMALL), "--round", "2"]),
        ("settle", ["settle", str(SMALL)]),
        ("generate", ["generate", "--sellers", "30", "--fcs", "3", "--regions", "2", "--requests", "40", "--history-weeks", "60"]),
        ("simulate", ["simulate", "--sellers", "60", "--fcs", "3", "--regions", "1"]),
    ]:
        folder = tmp / name
        assert run([*args, "-o", str(folder), "-q"]) == 0, name
        out[name] = folder
    folder = tmp / "forecast"
    assert run(["forecast", str(out["generate"]), "-o", str(folder), "-q", "--method", "seasonal_yoy"]) == 0
    out["forecast"] = folder
    return out


def _text_table(path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _numbers(path) -> pd.DataFrame:
    """The table's number columns as pandas reads them (a column left empty, such as `reason`, is text)."""
    frame = pd.read_csv(path)
    return frame[[c for c in frame.columns if frame[c].notna().any()]]


def test_every_number_column_of_every_written_table_has_a_declared_unit(written):
    """A new float column without a unit in optalloc.tables fails here (and write_tables refuses to write it)."""
    seen = 0
    for command, folder in written.items():
        for path in sorted(folder.glob("*.csv")):
            frame = _numbers(path)
            found = tables.units_of(path.stem, frame)  # raises UnitError for an undeclared float column
            floats = [c for c in frame.columns if frame[c].dtype.kind == "f" and c != (tables.WRITTEN[path.stem].row_units or (None,))[0]]
            assert set(floats) <= set(found), (command, path.name)
            seen += len(floats)
    assert seen > 100


def test_no_written_number_has_more_decimals_than_its_unit(written):
    """Money (and prices per cube) to the cent, cube to 0.001, in every CSV of every command, checked on the text."""
    for command, folder in written.items():
        for path in sorted(folder.glob("*.csv")):
            text, frame = _text_table(path), _numbers(path)
            for col, unit in tables.units_of(path.stem, frame).items():
                for i, cell in enumerate(text[col]):
                    if cell in ("", "nan"):
                        continue
                    m = NUMBER.match(cell)
                    assert m, (command, path.name, col, cell)
                    u = unit[text.loc[i, tables.WRITTEN[path.stem].row_units[0]]] if isinstance(unit, dict) else unit
                    assert len(m.group(1) or "") <= max(u.decimals, 1), (command, path.name, col, cell, u)


# summary.json fields and their units (docs/outputs.md, "summary.json"); any other number is a count, a setting or a hash.
SUMMARY_UNITS = {"allocated_cube": units.CUBE, "net_capacity_cube": units.CUBE, "pool_cube": units.CUBE, "granted_cube": units.CUBE,
                 "pool_available_cube": units.CUBE, "pool_left_cube": units.CUBE, "clearing_price": units.PER_CUBE,
                 "pool_dual_max": units.DUAL, "objective": units.MONEY, "reservation_fees": units.MONEY, "credits": units.MONEY,
                 "net": units.MONEY, "fully_offset_share": units.SHARE}


def _walk(doc, path=()):
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _walk(v, (*path, k))
    elif isinstance(doc, list):
        for v in doc:
            yield from _walk(v, path)
    else:
        yield path, doc


def test_summary_json_numbers_are_written_without_float_noise(written):
    for command, folder in written.items():
        path = folder / ("instance.json" if command == "generate" else "summary.json")
        raw = path.read_text()
        doc = json.loads(raw)
        for keys, v in _walk({k: v for k, v in doc.items() if k != "settings"}):
            if isinstance(v, float):
                unit = SUMMARY_UNITS.get(keys[-1]) or (units.SHARE if keys[:1] in (("mean_wql",), ("mean_coverage_90",)) else None)
                decimals = len(repr(v).split(".")[1]) if "." in repr(v) and "e" not in repr(v) else 0
                limit = unit.decimals if unit else 4
                if command == "simulate" and keys[0] == "headline":
                    limit = 4
                assert decimals <= max(limit, 1), (command, keys, v)
        # No number in the file's text (outside the echoed settings) carries more than 4 decimals.
        body = json.dumps({k: v for k, v in doc.items() if k != "settings"})
        assert not re.search(r"\d\.\d{5,}", body), (command, re.search(r"\d\.\d{5,}\d*", body))


def test_the_issue_examples_are_gone(written):
    limits = _text_table(written["solve"] / "limits.csv")
    row = limits[(limits["seller_id"] == "S00") & (limits["month"] == "2026-10")].iloc[0]
    assert row["upper_cube"] == "1650.44"
    settlement = _text_table(written["solve"] / "settlement.csv")
    q02 = settlement[settlement["request_id"] == "Q02"].iloc[0]
    assert (q02["reservation_fee"], q02["credit"], q02["net"]) == ("1666.35", "1189.82", "476.53")
    caps = _text_table(written["solve"] / "grants.csv")["request_cap_cube"]
    assert all(len(c.partition(".")[2]) <= 3 for c in caps), caps.tolist()  # was 2052.0400000000004


def _dec(values) -> Decimal:
    return sum((Decimal(v) for v in values if v not in ("", "nan")), Decimal(0))


def test_totals_in_summary_json_are_the_sums_of_the_csv_rows(written):
    """Read the CSVs as text, sum with Decimal, compare with summary.json: exactly, to the cent and the milli-cube."""
    folder = written["solve"]
    summary = json.loads((folder / "summary.json").read_text(), parse_float=Decimal)
    t = {name: _text_table(folder / f"{name}.csv") for name in ("limits", "fc_prices", "grants", "pools", "round_prices", "settlement")}
    st = summary["settlement"]
    assert _dec(t["settlement"]["reservation_fee"]) == st["reservation_fees"]
    assert _dec(t["settlement"]["credit"]) == st["credits"]
    assert _dec(t["settlement"]["net"]) == st["net"]
    assert st["reservation_fees"] - st["credits"] == st["net"]  # every credit here is below its fee
    for fee, credit, net in zip(t["settlement"]["reservation_fee"], t["settlement"]["credit"], t["settlement"]["net"]):
        assert Decimal(net) == max(Decimal(fee) - Decimal(credit), Decimal(0))
    base = summary["baseline"]
    assert _dec(t["limits"]["limit_cube"]) == base["allocated_cube"]
    assert _dec(t["fc_prices"]["net_cube"]) == base["net_capacity_cube"]
    assert _dec(t["fc_prices"]["pool_cube"]) == base["pool_cube"]
    assert sum(Decimal(v) > 0 for v in t["fc_prices"]["shadow_price"]) == base["binding_fc_rows"]
    granted, left, available = defaultdict(Decimal), defaultdict(Decimal), defaultdict(Decimal)
    for r in t["grants"].itertuples():
        granted[(int(r.round), r.storage_type)] += Decimal(r.granted_cube)
    for r in t["pools"].itertuples():
        left[(int(r.round), r.storage_type)] += Decimal(r.pool_after)
        available[(int(r.round), r.storage_type)] += max(Decimal(r.pool_cube) - Decimal(r.held_cube), Decimal(0))
    prices = {(int(r.round), r.storage_type): r for r in t["round_prices"].itertuples()}
    for rec in summary["rounds"]:
        key = (rec["round"], rec["storage_type"])
        assert rec["granted_cube"] == granted[key] == Decimal(prices[key].granted_cube)
        assert rec["pool_left_cube"] == left[key] and rec["pool_available_cube"] == available[key]
        assert rec["objective"] == Decimal(prices[key].objective)


def test_the_batch_message_has_no_float_noise_and_its_totals_are_the_exported_sums(tmp_path):
    db = f"sqlite:///{tmp_path}/s.db"
    assert cli("ingest", str(SMALL), "--db", db).returncode == 0
    done = cli("batch", "--date", "2027-01-05", "--workers", "0", "--db", db)
    assert done.returncode == 0, done.stderr
    assert not re.search(r"\d\.\d{4,}", done.stdout), done.stdout  # timings to 0.001 s, money to the cent, cube to 0.001
    report = json.loads(done.stdout, parse_float=Decimal)
    assert cli("export", "--period", "P202610", "-o", str(tmp_path / "out"), "--db", db).returncode == 0
    settlement = _text_table(tmp_path / "out" / "settlement.csv")
    grants = _text_table(tmp_path / "out" / "grants.csv")
    prices = _text_table(tmp_path / "out" / "round_prices.csv")
    steps = {s["step"]: s for s in report["steps"]}
    assert steps["P202610 settlement"]["reservation_fees"] == _dec(settlement["reservation_fee"])
    assert steps["P202610 settlement"]["credits"] == _dec(settlement["credit"])
    for r in (1, 2, 3):
        assert steps[f"P202610 round {r}"]["granted_cube"] == _dec(grants[grants["round"] == str(r)]["granted_cube"])
        assert steps[f"P202610 round {r}"]["objective"] == _dec(prices[prices["round"] == str(r)]["objective"])
    assert report["objective"] == _dec(prices["objective"])
    for s in report["steps"]:
        for key in ("objective", "reservation_fees", "credits"):
            if key in s:
                assert -s[key].as_tuple().exponent <= 2, s
    status = cli("status", "--db", db)
    assert status.returncode == 0
    objectives = [r["objective"] for r in json.loads(status.stdout, parse_float=Decimal)["runs"] if r["objective"] is not None]
    assert report["objective"] in objectives and all(-o.as_tuple().exponent <= 2 for o in objectives)


def test_the_simulate_message_shows_money_in_cents_and_cube_to_a_milli_cube(written, capsys):
    assert run(["simulate", "--sellers", "60", "--fcs", "3", "--regions", "1", "-q"]) == 0
    out = capsys.readouterr().out
    headline = _text_table(written["simulate"] / "headline.csv").set_index("metric")
    fees = Decimal(headline.loc["reservation fees ($)", "market"])
    assert f"| reservation fees ($) | {fees:,.2f} |" in out
    assert not re.search(r"\d\.\d{5,}", out), out  # shares to 4 decimals, money to 2, cube to 3
    rows = [line for line in out.splitlines() if line.startswith("| pool (cube-months)")]
    assert rows and re.search(r"\| [\d,]+\.\d{3} \|", rows[0])


def test_the_report_shows_each_number_in_its_units_decimals(written):
    from optalloc.report import load_output_folder, render

    page = render(load_output_folder(written["solve"]))
    cells = re.findall(r"<td>([-\d,.]+)</td>", page)
    assert cells and all(len(c.split(".")[1]) <= 4 for c in cells if "." in c)
    assert "<td>4,598.000</td>" in page  # round 1's oversize granted cube, to 0.001
    assert "$41,301.00" in page  # the settlement's fees, to the cent


# ---------------------------------------------------------------- the rounding itself


def test_rounding_is_half_away_from_zero_on_the_decimal_value_after_float_noise():
    assert units.rounded([1.005, 0.015, 2.675, -1.005, 0.004999, 1650.4400000000003], units.MONEY).tolist() == [1.01, 0.02, 2.68, -1.01,
                                                                                                                  0.0, 1650.44]
    assert units.rounded([0.0005, 2052.0400000000004, 41171.78999999999], units.CUBE).tolist() == [0.001, 2052.04, 41171.79]
    assert repr(units.value(0.1 + 0.2, units.MONEY)) == "0.3"
    assert units.value(float("nan"), units.MONEY) is None and units.value(None, units.CUBE) is None
    assert units.text(1234567.891, units.MONEY) == "1,234,567.89" and units.text(0.5, units.CUBE) == "0.500"


def test_a_total_is_the_exact_sum_of_the_rounded_rows():
    rows = np.full(1000, 0.014)  # each shows as 0.01; the unrounded sum is 14.00
    assert units.total(rows, units.MONEY) == 10.0
    assert units.total([0.1] * 3, units.MONEY) == 0.3  # not 0.30000000000000004
    assert units.total([np.nan, 1.0], units.CUBE) == 1.0


def test_a_row_net_is_its_shown_fee_less_its_shown_credit():
    frame = pd.DataFrame({"reservation_fee": [0.03, 10.004], "credit": [0.015, 0.006], "net": [0.015, 9.998]})
    shown = tables.round_table("settlement", frame)
    assert shown["reservation_fee"].tolist() == [0.03, 10.0]
    assert shown["credit"].tolist() == [0.02, 0.01]
    assert shown["net"].tolist() == [0.01, 9.99]


def test_a_float_column_without_a_unit_is_refused_and_nothing_is_written(tmp_path):
    frame = pd.DataFrame({"seller_id": ["S1"], "mystery": [1.5]}).set_index("seller_id")
    with pytest.raises(tables.UnitError, match="mystery"):
        write_tables(tmp_path / "out", {"limits": frame}, {})
    assert not (tmp_path / "out").exists()
    with pytest.raises(tables.UnitError, match="no unit declared for row"):
        tables.round_table("headline", pd.DataFrame({"metric": ["new metric"], "market": [1.0]}))


def test_the_docs_units_table_lists_every_declared_column_with_its_decimals():
    from conftest import ROOT

    section = (ROOT / "docs" / "outputs.md").read_text().split("## Units and rounding", 1)[1].split("\n## ", 1)[0]
    documented = {}
    for line in section.splitlines():
        cells = line.split(" | ")
        if len(cells) == 3 and cells[1].strip().isdigit():
            for name in re.findall(r"`([a-z_0-9]+)`", cells[2]):
                documented.setdefault(name, int(cells[1]))
    declared = {c.name: c.unit.decimals for t in tables.WRITTEN.values() for c in t.columns if c.unit is not None}
    assert {name: documented.get(name) for name in declared} == declared
