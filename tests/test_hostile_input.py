"""Hostile input: whatever a file holds, the CLI answers with exit 0 or a clear exit 2 (never a traceback), and on
failure writes nothing. Named regressions for issue 9's input half first, then hypothesis-driven mutations of the
shipped instances (cells, column types, files, encodings, truncation)."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import INSTANCES, ROOT, examples
from optalloc.cli import main

SMALL = INSTANCES / "small_network"
WORKED = INSTANCES / "worked_example.json"
CSV_TABLES = sorted(p.stem for p in SMALL.glob("*.csv"))


def cli(*args: str) -> tuple[int, str]:
    """Run the real CLI in this process; (exit code, stderr). Any exception other than SystemExit fails the test."""
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    return exc.value.code, err.getvalue()


def copy_small(dst: Path) -> Path:
    shutil.copytree(SMALL, dst)
    return dst


def edit(folder: Path, table: str, row: int, field: str, value: str) -> None:
    path = folder / f"{table}.csv"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.loc[row - 1, field] = value
    frame.to_csv(path, index=False)


def worked(tmp_path: Path, change) -> Path:
    doc = json.loads(WORKED.read_text())
    change(doc)
    path = tmp_path / "inst.json"
    path.write_text(json.dumps(doc))
    return path


def refused(code: int, err: str, *texts: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    for t in texts:
        assert t in err, err


# ---------------------------------------------------------------- ids


def test_region_with_semicolon_is_refused(tmp_path):
    folder = copy_small(tmp_path / "inst")
    edit(folder, "fcs", 1, "region", "R00;R01")
    refused(*cli("validate", folder), "fcs.csv, row 1, field 'region': must be printable text", "without ';'")


@pytest.mark.parametrize("bad", ["S\x0001", "S\t01", "S\n01", "S\u202e01", "S\ufeff01", "x" * 129], ids=["nul", "tab", "newline", "bidi", "bom", "long"])
def test_ids_with_control_characters_or_too_long_are_refused(tmp_path, bad):
    def change(doc):
        doc["sellers"][0]["seller_id"] = bad

    code, err = cli("validate", worked(tmp_path, change))
    refused(code, err, "sellers, row 1, field 'seller_id'")


def test_list_items_follow_the_id_rule(tmp_path):
    def change(doc):
        doc["sellers"][0]["regions"] = ["east;west"]

    refused(*cli("validate", worked(tmp_path, change)), "field 'regions': items must be printable text")


def test_period_id_and_instance_name_follow_the_id_rule(tmp_path):
    def change(doc):
        doc["period"]["period_id"] = "P;1"
        doc["name"] = "n" * 300

    refused(*cli("validate", worked(tmp_path, change)), "field 'period.period_id': must be printable text", "field 'name': instance name longer than 128")


def test_month_digits_must_be_ascii(tmp_path):
    folder = copy_small(tmp_path / "inst")
    edit(folder, "needs", 1, "month", "٢٠٢٦-10")
    refused(*cli("validate", folder), "needs.csv, row 1, field 'month': must be a calendar month")


def test_a_dollar_sign_is_a_fine_id(tmp_path):
    text = WORKED.read_text().replace("FC-EAST-1", "FC-$EAST$-1")
    (tmp_path / "inst.json").write_text(text)
    assert cli("validate", tmp_path / "inst.json")[0] == 0


# ---------------------------------------------------------------- numbers


def test_fee_of_1e308_is_refused(tmp_path):
    folder = copy_small(tmp_path / "inst")
    edit(folder, "requests", 2, "max_fee_per_cube", "1e308")
    refused(*cli("solve", folder, "-o", tmp_path / "out", "-q"), "requests.csv, row 2, field 'max_fee_per_cube': must be <= 1e+06, got 1e+308")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("table, field, value, message", [
    ("fcs", "capacity_cube", "1e308", "must be <= 1e+12"),
    ("sellers", "productivity", "2e9", "must be <= 1e+09"),
    ("sales", "sales", "1e16", "must be <= 1e+15"),
    ("requests", "max_cube", "1e400", "must be finite"),
    ("requests", "round", "1e300", "must be <= 1e+06"),
    ("needs", "p50_cube", "-inf", "must be finite"),
])
def test_numbers_beyond_their_documented_range_are_refused(tmp_path, table, field, value, message):
    folder = copy_small(tmp_path / "inst")
    edit(folder, table, 1, field, value)
    refused(*cli("validate", folder), f"{table}.csv, row 1, field '{field}': {message}")


@pytest.mark.parametrize("key, value", [("reserve_price", 1e308), ("request_cap_cube", 1e300), ("headroom", 1e9)])
def test_settings_numbers_have_ranges_too(tmp_path, key, value):
    def change(doc):
        doc["settings"][key] = value

    refused(*cli("validate", worked(tmp_path, change)), f"field 'settings.{key}'")


def test_a_json_integer_beyond_float_range_is_refused(tmp_path):
    path = worked(tmp_path, lambda doc: doc["requests"][0].update(max_cube=123456789))
    path.write_text(path.read_text().replace("123456789", "1" + "0" * 400))
    refused(*cli("validate", path), "field 'max_cube': must be finite")


@pytest.mark.parametrize("doubled, kept", [('"pool_share": 0.3, "pool_share": 0.05', "pool_share"),
                                           ('"credit_rate": 0.15, "credit_rate": 0.5', "credit_rate")])
def test_a_key_given_twice_is_refused_not_the_last_one_taken(tmp_path, doubled, kept):
    """json.loads keeps the last of two equal keys without a word: a planner's second pool_share replaced the first."""
    path = worked(tmp_path, lambda doc: doc["settings"].update({kept: 0.25}))
    path.write_text(path.read_text().replace(f'"{kept}": 0.25', doubled))
    refused(*cli("validate", path), f"the key '{kept}' appears twice in one object")
    text = json.loads(WORKED.read_text())
    path.write_text(json.dumps(text)[:-1] + ', "requests": []}')  # a second top-level "requests" replaced the list
    refused(*cli("solve", path, "-o", tmp_path / "out"), "the key 'requests' appears twice")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", ["instance", "summary"])
def test_a_json_number_of_thousands_of_digits_is_refused(tmp_path, where):
    """Python refuses to read an integer of more than 4,300 digits with a ValueError that is not a JSONDecodeError:
    it was exit 1 ("internal error"), from an instance and from an output folder's summary.json alike."""
    huge = "1" + "0" * 5000
    if where == "instance":
        path = worked(tmp_path, lambda doc: doc["settings"].update(request_cap_cube=7))
        path.write_text(path.read_text().replace('"request_cap_cube": 7', f'"request_cap_cube": {huge}'))
        refused(*cli("validate", path), "a number with more than 4,300 digits")
    else:
        out = tmp_path / "out"
        assert cli("solve", WORKED, "-o", out, "-q")[0] == 0
        summary = out / "summary.json"
        summary.write_text(summary.read_text().replace("{", f'{{"padding": {huge}, ', 1))
        refused(*cli("report", out, "-o", tmp_path / "r.html"), "summary.json", "a number with more than 4,300 digits")


def test_a_json_file_that_is_a_device_is_refused_not_read_for_ever(tmp_path):
    """`validate /dev/zero` read bytes until memory ran out; an instance.json linked to a device did the same."""
    refused(*cli("validate", "/dev/zero"), "/dev/zero", "not a regular file")
    folder = copy_small(tmp_path / "inst")
    (folder / "instance.json").unlink()
    (folder / "instance.json").symlink_to("/dev/zero")
    refused(*cli("validate", folder), "instance.json", "not a regular file")


@pytest.mark.parametrize("where, value, message", [
    ("settings.pool_share", True, "field 'settings.pool_share': Input should be a valid number"),  # was 1.0: the whole capacity pooled
    ("settings.credit_rate", True, "field 'settings.credit_rate': Input should be a valid number"),
    ("settings.request_cap_cube", "1_000", "field 'settings.request_cap_cube': Input should be a valid number"),
    ("settings.solver.allow_nonoptimal", "yes", "field 'settings.solver.allow_nonoptimal': Input should be a valid boolean"),
    ("settings.solver.threads", 2.5, "field 'settings.solver.threads': Input should be a valid integer"),
    ("period.rounds", [True, 2, 3], "field 'period.rounds.0': Input should be a valid integer"),
    ("settings", [], "field 'settings'"),  # was the defaults, as were "", 0 and false
    ("settings", 0, "field 'settings'"),
])
def test_settings_and_period_take_json_types_as_tables_do(tmp_path, where, value, message):
    """A table cell of true or "1_000" where a number belongs is refused; settings and the period read them as 1.0,
    1000 and True (pydantic's lax mode). Integers are still numbers (pool_share 1 is 1.0)."""
    def change(doc):
        *parents, last = where.split(".")
        node = doc
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value

    refused(*cli("validate", worked(tmp_path, change)), message)


def test_an_integer_setting_where_a_number_belongs_is_fine(tmp_path):
    code, err = cli("validate", worked(tmp_path, lambda doc: doc["settings"].update(credit_cap_share=1, request_cap_cube=1000)))
    assert code == 0, err


def test_json_booleans_and_objects_are_not_numbers_or_ids(tmp_path):
    def change(doc):
        doc["requests"][0]["max_cube"] = True
        doc["requests"][1]["seller_id"] = {"a": 1}

    refused(*cli("validate", worked(tmp_path, change)), "row 1, field 'max_cube': value has type boolean; expected number",
            "row 2, field 'seller_id': value has type object; expected text")


def test_summary_json_stays_finite_at_the_largest_allowed_numbers(tmp_path):
    def change(doc):
        for r in doc["requests"]:
            r["max_fee_per_cube"] = 1e6
        for s in doc["sellers"]:
            s["productivity"] = 1e9

    out = tmp_path / "out"
    code, err = cli("solve", worked(tmp_path, change), "-o", out, "-q")
    assert code == 0, err
    text = (out / "summary.json").read_text()
    assert "Infinity" not in text and "NaN" not in text
    json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in summary.json"))


# ---------------------------------------------------------------- Parquet column types


def _as_parquet(folder: Path, table: str, change) -> None:
    frame = pd.read_csv(folder / f"{table}.csv", dtype=str, keep_default_na=False)
    change(frame)
    (folder / f"{table}.csv").unlink()
    frame.to_parquet(folder / f"{table}.parquet", index=False)


def test_parquet_timestamp_as_number_is_refused(tmp_path):
    folder = copy_small(tmp_path / "inst")
    _as_parquet(folder, "requests", lambda f: f.__setitem__("max_fee_per_cube", pd.Timestamp("2026-01-01")))
    refused(*cli("validate", folder), "requests.parquet, field 'max_fee_per_cube': column has type timestamp; expected number")


@pytest.mark.parametrize("field, values, kind", [
    ("max_cube", lambda n: pd.to_timedelta(np.arange(n), unit="s"), "duration"),
    ("max_cube", lambda n: np.ones(n, dtype=bool), "boolean"),
    ("min_cube", lambda n: [b"1"] * n, "bytes"),
    ("seller_id", lambda n: pd.Timestamp("2026-01-01", tz="UTC"), "timestamp"),
    ("request_id", lambda n: np.arange(n) % 2 == 0, "boolean"),
    ("storage_type", lambda n: [b"standard"] * n, "bytes"),
    ("round", lambda n: pd.Categorical([pd.Timestamp("2026-01-01")] * n), "timestamp"),  # Parquet may drop the dictionary
    ("submitted_at", lambda n: np.arange(n, dtype=float), "number"),
])
def test_parquet_columns_of_the_wrong_type_are_refused(tmp_path, field, values, kind):
    folder = copy_small(tmp_path / "inst")
    _as_parquet(folder, "requests", lambda f: f.__setitem__(field, values(len(f))))
    code, err = cli("validate", folder)
    refused(code, err, f"requests.parquet, field '{field}': column has type ")
    assert f"{kind}; expected" in err


@pytest.mark.parametrize("values, message", [
    (lambda n: ["now"] * n, "not an ISO 8601 date-time: 'now'"),
    (lambda n: pd.Series(np.array(["10001-01-01"] * n, dtype="datetime64[s]")), "not an ISO 8601 date-time: 10001-01-01"),
    (lambda n: pd.Series(np.array(["9999-12-31T23:00"] * n, dtype="datetime64[s]")).dt.tz_localize("UTC") + pd.Timedelta(hours=2),
     "10000-01-01T01:00:00Z (UTC) is outside the years 0001 to 9999"),
])
def test_parquet_times_that_cannot_be_written_back_are_refused(tmp_path, values, message):
    """Times are written back as ISO 8601 in UTC with a four-digit year: a year past 9999 was accepted, and a stored
    period holding it could never be loaded again (exit 1); "now" read the clock."""
    folder = copy_small(tmp_path / "inst")
    _as_parquet(folder, "requests", lambda f: f.__setitem__("submitted_at", values(len(f))))
    code, err = cli("validate", folder)
    refused(code, err, "requests.parquet, row 1, field 'submitted_at': ")
    assert message in err


def test_times_of_any_precision_and_year_are_read_together(tmp_path):
    """Nine fractional digits in one row made pandas read the whole column in nanoseconds, whose range (1677-2262)
    refused every other row outside it; digits past the microsecond are dropped first, as they are after."""
    folder = copy_small(tmp_path / "inst")
    path = folder / "requests.csv"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.loc[0:2, "submitted_at"] = ["2026-09-05T00:00:00.123456789Z", "9999-12-31T23:59:59Z", "2300-01-01T00:00:00.9999999Z"]
    frame.to_csv(path, index=False)
    code, err = cli("solve", folder, "-o", tmp_path / "out")
    assert code == 0, err
    times = pd.read_csv(tmp_path / "out" / "grants.csv").set_index("request_id")["submitted_at"]
    assert [times[r] for r in frame["request_id"][:3]] == ["2026-09-05T00:00:00.123456Z", "9999-12-31T23:59:59.000000Z",
                                                            "2300-01-01T00:00:00.999999Z"]


def test_the_last_writable_time_is_accepted_and_written_back_exactly(tmp_path):
    folder = copy_small(tmp_path / "inst")
    _as_parquet(folder, "requests", lambda f: f.__setitem__("submitted_at", pd.Timestamp("9999-12-31 23:59:59.999999", tz="UTC")))
    code, err = cli("solve", folder, "-o", tmp_path / "out")
    assert code == 0, err
    assert set(pd.read_csv(tmp_path / "out" / "grants.csv")["submitted_at"]) == {"9999-12-31T23:59:59.999999Z"}
    code, err = cli("report", tmp_path / "out", "-o", tmp_path / "page.html")  # its own output reads back
    assert code == 0, err


def test_parquet_categorical_text_and_integer_ids_are_fine(tmp_path):
    folder = copy_small(tmp_path / "inst")

    def change(f):
        f["seller_id"] = f["seller_id"].astype("category")
        f["round"] = f["round"].astype("int64")
        f["max_cube"] = f["max_cube"].astype(float)
        f["submitted_at"] = pd.to_datetime(f["submitted_at"], utc=True)

    _as_parquet(folder, "requests", change)
    code, err = cli("validate", folder)
    assert code == 0, err


# ---------------------------------------------------------------- files of a folder


def test_misnamed_table_file_is_refused_with_nearest_name(tmp_path):
    folder = copy_small(tmp_path / "inst")
    (folder / "requests.csv").rename(folder / "requets.csv")
    refused(*cli("validate", folder), "requets.csv: not a table of an instance (did you mean requests.csv?)")


@pytest.mark.parametrize("name, hint", [("Sales.CSV", "did you mean sales.csv?"), ("notes.txt", "expected instance.json")])
def test_other_files_are_refused(tmp_path, name, hint):
    folder = copy_small(tmp_path / "inst")
    (folder / name).write_text("x")
    refused(*cli("validate", folder), f"{name}: not a table of an instance", hint)


def test_dot_files_are_ignored(tmp_path):
    folder = copy_small(tmp_path / "inst")
    (folder / ".DS_Store").write_bytes(b"\x00\x01")
    assert cli("validate", folder)[0] == 0


def test_a_generated_instance_folder_still_loads(tmp_path):
    for fmt in ("csv", "parquet"):
        out = tmp_path / fmt
        assert cli("generate", "-o", out, "--sellers", "8", "--requests", "10", "--format", fmt, "-q")[0] == 0
        code, err = cli("validate", out)
        assert code == 0, err


def test_rows_with_more_fields_than_the_header_are_refused(tmp_path):
    folder = copy_small(tmp_path / "inst")
    lines = (folder / "sellers.csv").read_text().splitlines()
    (folder / "sellers.csv").write_text("\n".join([lines[0]] + [f"{line},9" for line in lines[1:]]) + "\n")
    refused(*cli("validate", folder), "sellers.csv: rows have more fields than the header line names")


def test_an_indexed_parquet_table_reads_its_index_as_a_column(tmp_path):
    folder = copy_small(tmp_path / "inst")
    pd.read_csv(folder / "sellers.csv", dtype=str).set_index("seller_id").to_parquet(folder / "sellers.parquet")
    (folder / "sellers.csv").unlink()
    code, err = cli("validate", folder)
    assert code == 0, err


def test_a_required_table_without_rows_is_refused(tmp_path):
    folder = copy_small(tmp_path / "inst")
    (folder / "needs.csv").write_text((folder / "needs.csv").read_text().splitlines()[0] + "\n")
    refused(*cli("solve", folder, "-o", tmp_path / "out", "-q"), "needs.csv: required table has no rows")


# ---------------------------------------------------------------- JSON instances and encodings


def test_empty_json_requests_list_is_accepted(tmp_path):
    def change(doc):
        doc["requests"] = []
        doc["sales"] = []
        doc.pop("grant_sales", None)

    out = tmp_path / "out"
    code, err = cli("solve", worked(tmp_path, change), "-o", out, "-q")
    assert code == 0, err
    assert json.loads((out / "summary.json").read_text())["instance"]["requests"] == 0


def test_non_utf8_json_is_exit_2(tmp_path):
    path = tmp_path / "inst.json"
    path.write_bytes(WORKED.read_bytes().replace(b"FC-EAST-1", "FC-ÉAST-1".encode("latin-1")))
    refused(*cli("validate", path), f"{path}: not UTF-8")


@pytest.mark.parametrize("encoding", ["latin-1", "utf-16"])
def test_non_utf8_csv_is_exit_2(tmp_path, encoding):
    folder = copy_small(tmp_path / "inst")
    text = (folder / "sellers.csv").read_text().replace("S00", "S0é")
    (folder / "sellers.csv").write_bytes(text.encode(encoding))
    refused(*cli("validate", folder), "sellers.csv: not UTF-8")


def test_utf8_with_bom_is_accepted(tmp_path):
    folder = copy_small(tmp_path / "inst")
    for p in [folder / "fcs.csv", folder / "instance.json"]:
        p.write_bytes(b"\xef\xbb\xbf" + p.read_bytes())
    code, err = cli("validate", folder)
    assert code == 0, err


# ---------------------------------------------------------------- command-line arguments


@pytest.mark.parametrize("r", ["99", "-1", "0"])
def test_clear_round_outside_period_is_refused(tmp_path, r):
    refused(*cli("clear", SMALL, "--round", r, "-o", tmp_path / "out", "-q"), "--round: round", "is not a round of period P202610")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", "0", "abc", "1e400"])
def test_time_limit_nan_is_refused(tmp_path, value):
    code, err = cli("solve", WORKED, "--time-limit", value, "-o", tmp_path / "out", "-q")
    refused(code, err, "argument --time-limit")
    assert not (tmp_path / "out").exists()


def test_a_bad_time_limit_in_the_instance_settings_is_refused(tmp_path):
    path = worked(tmp_path, lambda doc: doc["settings"].setdefault("solver", {}).update(time_limit=-1))
    refused(*cli("validate", path), "field 'settings.solver.time_limit'")


@pytest.fixture(scope="module")
def round_one(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prev") / "r1"
    assert cli("clear", SMALL, "--round", "1", "-o", out, "-q")[0] == 0
    return out


def test_summary_records_the_inputs_hash(round_one):
    from optalloc.io import load_instance
    from optalloc.results_io import inputs_hash, period_hash

    summary = json.loads((round_one / "summary.json").read_text())
    assert summary["inputs_hash"] == inputs_hash(load_instance(SMALL))
    assert summary["period_hash"] == period_hash(load_instance(SMALL)) != summary["inputs_hash"]  # made in one pass, each its own tables


def test_previous_from_another_instance_is_refused(tmp_path, round_one):
    folder = copy_small(tmp_path / "inst")
    edit(folder, "sellers", 1, "productivity", "12.5")
    out = tmp_path / "out"
    refused(*cli("clear", folder, "--previous", round_one, "-o", out, "-q"), "summary.json, field 'period_hash': was written for another period")
    refused(*cli("settle", folder, "--previous", round_one, "-o", out, "-q"), "was written for another period")
    assert not out.exists()


def test_requests_and_sales_that_arrive_after_a_round_do_not_make_the_folder_foreign(tmp_path):
    """Round 1 cleared before the sales report (and round 2's requests) arrived: the next steps still continue from it."""
    early = copy_small(tmp_path / "early")
    requests = pd.read_csv(early / "requests.csv", dtype=str)
    requests[requests["round"] == "1"].to_csv(early / "requests.csv", index=False)
    (early / "sales.csv").unlink()
    r1 = tmp_path / "r1"
    assert cli("clear", early, "--round", "1", "-o", r1, "-q")[0] == 0
    assert cli("clear", SMALL, "--previous", r1, "-o", tmp_path / "r2", "-q")[0] == 0


def _corrupt_row(path: Path, row: int = 2) -> None:
    """Prefix every cell but the first of data row `row` with 'x' (so numbers stop being numbers)."""
    lines = path.read_text().splitlines(True)
    lines[row] = lines[row].replace(",", ",x")
    path.write_text("".join(lines))


def _damaged(round_one: Path, tmp_path: Path, damage) -> Path:
    prev = tmp_path / "prev"
    shutil.copytree(round_one, prev)
    damage(prev)
    return prev


@pytest.mark.parametrize("damage, message", [
    (lambda p: (p / "grants.csv").write_bytes((p / "grants.csv").read_bytes()[:-25]), "grants.csv: truncated"),
    (lambda p: (p / "grants.csv").write_text("".join((p / "grants.csv").read_text().splitlines(True)[:-2])), "grants.csv: incomplete"),
    (lambda p: (p / "limits.csv").write_text("".join((p / "limits.csv").read_text().splitlines(True)[:-1])), "limits.csv: incomplete"),
    (lambda p: (p / "round_prices.csv").write_text("".join((p / "round_prices.csv").read_text().splitlines(True)[:-1])),
     "round_prices.csv: incomplete"),
    (lambda p: _corrupt_row(p / "pools.csv"), "pools.csv, row 2, field 'pool_cube': not a number"),
    (lambda p: (p / "limits.csv").write_bytes(b"\xff\xfe\x00"), "limits.csv: not UTF-8"),
    (lambda p: (p / "limits.csv").unlink(), "missing result table limits"),
    (lambda p: (p / "summary.json").unlink(), "no summary.json"),
    (lambda p: (p / "summary.json").write_text("{}"), "has no period_hash"),
    (lambda p: (p / "grants.csv").write_text("round,request_id\n1,Q1\n"), "not an optalloc result table"),
], ids=["cut-mid-line", "cut-lines", "limits-short", "prices-short", "corrupt-cells", "not-utf8", "no-limits", "no-summary", "no-hash",
        "wrong-columns"])
def test_a_damaged_previous_folder_is_refused(tmp_path, round_one, damage, message):
    prev = _damaged(round_one, tmp_path, damage)
    out = tmp_path / "out"
    refused(*cli("clear", SMALL, "--previous", prev, "-o", out, "-q"), message)
    assert not out.exists()


# ---------------------------------------------------------------- report


def test_dollar_in_fc_id_renders_in_report(tmp_path):
    text = WORKED.read_text().replace("FC-EAST-1", "FC-$EAST$-1").replace('"standard"', '"st$and$ard"')
    (tmp_path / "inst.json").write_text(text)
    out, page = tmp_path / "out", tmp_path / "report.html"
    assert cli("solve", tmp_path / "inst.json", "-o", out, "-q")[0] == 0
    code, err = cli("report", out, "-o", page, "-q")
    assert code == 0, err
    html = page.read_text()
    assert "FC-$EAST$-1" in html and "st$and$ard" in html  # literally, not typeset as mathtext


@pytest.fixture(scope="module")
def solved_small(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("solved") / "out"
    assert cli("solve", WORKED, "-o", out, "-q")[0] == 0
    return out


@pytest.mark.parametrize("damage, message", [
    (lambda p: (p / "fc_prices.csv").write_bytes((p / "fc_prices.csv").read_bytes()[:-7]), "fc_prices.csv: truncated"),
    (lambda p: (p / "settlement.csv").write_text("garbage\n\x00\x01\n"), "settlement.csv: not an optalloc result table"),
    (lambda p: (p / "grants.csv").write_bytes("é".encode("latin-1")), "grants.csv: not UTF-8"),
    (lambda p: _corrupt_row(p / "limits.csv", 1), "limits.csv, row 1, field 'limit_cube': not a number"),
    (lambda p: (p / "summary.json").write_bytes(b"\xff"), "summary.json: not UTF-8"),
    (lambda p: (p / "summary.json").write_text("[1]"), "summary.json: must hold a JSON object"),
], ids=["truncated", "garbage", "latin-1", "corrupt-cells", "summary-not-utf8", "summary-not-object"])
def test_report_on_a_corrupt_folder_is_exit_2(tmp_path, solved_small, damage, message):
    folder = tmp_path / "out"
    shutil.copytree(solved_small, folder)
    damage(folder)
    refused(*cli("report", folder, "-o", tmp_path / "r.html", "-q"), message)
    assert not (tmp_path / "r.html").exists()


# ---------------------------------------------------------------- hypothesis: mutations of the shipped instances

HOSTILE = [
    "1e308", "-1e308", "1e400", "1e-400", "-0", "-0.0", "nan", "NaN", "inf", "-Infinity", "", " ", "0x10", "1_000", "١٢٣",
    "٢٠٢٦-١٠", "R00;R01", ";", ";;", "a\x00b", "\t", "a\nb", "\r\n", "\u202e", "\ufeff", "é", "😀", "x" * 300, "$x$", "\\", '"', "'",
    ",", "9" * 400, "True", "None", "null", "2026-13", "2026-10;2026-10", "2026-10;", "S00", "FC0", "standard", "R00", "Q00", "1", "0",
    "-1", "3", "2026-10", "2026-09-01T00:00:00Z", "2026-09-01", "1e12", "1000000",
]
cell_values = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=12), st.floats().map(repr), st.integers().map(str))
QUICK = settings(max_examples=examples(30), deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


def _assert_clean(code: int, err: str) -> None:
    assert code in (0, 2), err
    assert "Traceback" not in err


@QUICK
@given(table=st.sampled_from(CSV_TABLES), row=st.integers(1, 6), col=st.integers(0, 8), value=cell_values)
def test_any_cell_value_in_a_table_folder_gives_exit_0_or_2(table, row, col, value):
    with tempfile.TemporaryDirectory() as tmp:
        folder = copy_small(Path(tmp) / "inst")
        frame = pd.read_csv(folder / f"{table}.csv", dtype=str, keep_default_na=False)
        frame.iloc[row - 1, col % frame.shape[1]] = value
        frame.to_csv(folder / f"{table}.csv", index=False)
        _assert_clean(*cli("validate", folder))


COLUMN_VALUES = {
    "timestamp": lambda n: pd.Timestamp("2026-09-01", tz="UTC"),
    "naive timestamp": lambda n: pd.Timestamp("2026-09-01"),
    "duration": lambda n: pd.Timedelta(seconds=5),
    "boolean": lambda n: np.zeros(n, dtype=bool),
    "bytes": lambda n: [b"\x00\xff"] * n,
    "int": lambda n: np.arange(n, dtype="int64"),
    "float": lambda n: np.linspace(0, 1e300, n),
    "nan": lambda n: np.full(n, np.nan),
    "none": lambda n: [None] * n,
    "mixed": lambda n: [[1, "a", None, 2.5, "b", "c"][i % 6] for i in range(n)],
    "categorical": lambda n: pd.Categorical(["a", "b"] * (n // 2) + ["a"] * (n % 2)),
    "categorical int": lambda n: pd.Categorical(np.arange(n) % 3),
    "list": lambda n: [np.array(["2026-10"])] * n,
}


@QUICK
@given(table=st.sampled_from(CSV_TABLES), col=st.integers(0, 8), kind=st.sampled_from(sorted(COLUMN_VALUES)))
def test_any_column_type_in_parquet_gives_exit_0_or_2(table, col, kind):
    with tempfile.TemporaryDirectory() as tmp:
        folder = copy_small(Path(tmp) / "inst")
        frame = pd.read_csv(folder / f"{table}.csv", dtype=str, keep_default_na=False)
        frame[frame.columns[col % frame.shape[1]]] = COLUMN_VALUES[kind](len(frame))
        (folder / f"{table}.csv").unlink()
        try:
            frame.to_parquet(folder / f"{table}.parquet", index=False)
        except Exception:  # noqa: BLE001 - pyarrow cannot store this mix: nothing to test
            return
        _assert_clean(*cli("validate", folder))


def _rename(folder: Path, name: str, data) -> None:
    files = sorted(p for p in folder.iterdir() if p.is_file())
    src = files[data.draw(st.integers(0, len(files) - 1))]
    src.rename(folder / name)


def _encode(folder: Path, name: str, data) -> None:
    path = folder / data.draw(st.sampled_from(sorted(p.name for p in folder.iterdir() if p.is_file())))
    encoding = data.draw(st.sampled_from(["latin-1", "utf-16", "utf-16-le", "utf-8-sig", "utf-32", "cp1252"]))
    path.write_bytes(path.read_text().replace("S0", "Sé").encode(encoding, errors="replace"))


def _truncate(folder: Path, name: str, data) -> None:
    path = folder / data.draw(st.sampled_from(sorted(p.name for p in folder.iterdir() if p.is_file())))
    raw = path.read_bytes()
    path.write_bytes(raw[: data.draw(st.integers(0, len(raw)))])


def _remove(folder: Path, name: str, data) -> None:
    (folder / data.draw(st.sampled_from(sorted(p.name for p in folder.iterdir() if p.is_file())))).unlink()


def _add(folder: Path, name: str, data) -> None:
    (folder / name).write_bytes(data.draw(st.binary(max_size=40)))


def _garble(folder: Path, name: str, data) -> None:
    path = folder / data.draw(st.sampled_from(sorted(p.name for p in folder.iterdir() if p.is_file())))
    raw = bytearray(path.read_bytes())
    at = data.draw(st.integers(0, len(raw) - 1))
    raw[at:at + 1] = data.draw(st.sampled_from([b"\x00", b'"', b",", b"\n", b"\r", b"\xff", b"", b";", b",,,,"]))
    path.write_bytes(bytes(raw))


FILE_OPS = {"rename": _rename, "encode": _encode, "truncate": _truncate, "remove": _remove, "add": _add, "garble": _garble}
file_names = st.sampled_from(["requets.csv", "requests.parquet", "Requests.csv", "fcs.json", "instance.json", ".hidden", "x",
                              "sales.csv.bak", "grant_sales.csv", "fcs.parquet"])


@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(op=st.sampled_from(sorted(FILE_OPS)), name=file_names, data=st.data())
def test_any_file_operation_on_a_folder_gives_exit_0_or_2(op, name, data):
    with tempfile.TemporaryDirectory() as tmp:
        folder = copy_small(Path(tmp) / "inst")
        if (folder / name).exists() and op in ("rename", "add"):
            (folder / name).unlink()
        FILE_OPS[op](folder, name, data)
        _assert_clean(*cli("validate", folder))


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.floats(), st.integers(-(10**400), 10**400), st.sampled_from(HOSTILE), st.text(max_size=10)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=2)),
    max_leaves=4,
)


def _mutate_json(doc: dict, data) -> None:
    where = data.draw(st.sampled_from(["name", "period", "settings", "fcs", "sellers", "needs", "requests", "sales", "grant_sales"]))
    value = data.draw(json_values)
    if where == "name":
        doc["name"] = value
    elif where in ("period", "settings"):
        keys = sorted(doc.get(where) or {}) + ["extra"]
        doc.setdefault(where, {})[data.draw(st.sampled_from(keys))] = value
    elif data.draw(st.booleans()) or not doc.get(where):
        doc[where] = value if data.draw(st.booleans()) else []
    else:
        rows = doc[where]
        row = rows[data.draw(st.integers(0, len(rows) - 1))]
        row[data.draw(st.sampled_from(sorted(row) + ["extra"]))] = value


@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(data=st.data())
def test_any_value_in_a_json_instance_gives_exit_0_or_2(data):
    doc = json.loads(WORKED.read_text())
    _mutate_json(doc, data)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "inst.json"
        path.write_text(json.dumps(doc))  # NaN and Infinity as Python's json writes them, which json.loads reads back
        _assert_clean(*cli("validate", path))


@settings(max_examples=examples(12), deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(data=st.data())
def test_solve_on_a_mutated_json_instance_writes_all_or_nothing(data):
    doc = json.loads(WORKED.read_text())
    _mutate_json(doc, data)
    with tempfile.TemporaryDirectory() as tmp:
        path, out = Path(tmp) / "inst.json", Path(tmp) / "out"
        path.write_text(json.dumps(doc))
        code, err = cli("solve", path, "-o", out, "-q")
        assert code in (0, 2, 3), err  # 3: a mutation may make the floors infeasible
        assert "Traceback" not in err
        if code:
            assert not out.exists() and [p.name for p in Path(tmp).iterdir()] == ["inst.json"]
        else:
            summary = (out / "summary.json").read_text()
            assert "Infinity" not in summary and "NaN" not in summary


@pytest.mark.parametrize("damage", [
    lambda f: (f / "fcs.csv").write_bytes((f / "fcs.csv").read_bytes().replace(b"R00", b"R\x0000", 1)),
    lambda f: (f / "needs.csv").write_bytes((f / "needs.csv").read_text().encode("utf-16")),
    lambda f: (f / "requests.csv").write_bytes((f / "requests.csv").read_bytes()[:333]),
], ids=["nul-byte", "utf-16", "truncated"])
def test_the_installed_command_never_prints_a_traceback(tmp_path, damage, real_process):
    folder = copy_small(tmp_path / "inst")
    damage(folder)
    done = real_process.run("solve", str(folder), "-o", str(tmp_path / "out"), "-q", cwd=ROOT, timeout=120)
    assert done.returncode in (0, 2), done.stderr
    assert "Traceback" not in done.stderr
    if done.returncode:
        assert not (tmp_path / "out").exists()


@settings(max_examples=examples(15), deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(data=st.data())
def test_report_on_a_mutated_output_folder_gives_exit_0_or_2(solved_small, data):
    with tempfile.TemporaryDirectory() as tmp:
        folder, page = Path(tmp) / "out", Path(tmp) / "r.html"
        shutil.copytree(solved_small, folder)
        if data.draw(st.booleans()):
            name = data.draw(st.sampled_from(sorted(p.name for p in folder.glob("*.csv"))))
            frame = pd.read_csv(folder / name, dtype=str, keep_default_na=False)
            if len(frame):
                frame.iloc[data.draw(st.integers(0, len(frame) - 1)), data.draw(st.integers(0, frame.shape[1] - 1))] = data.draw(cell_values)
            frame.to_csv(folder / name, index=False, lineterminator="\n")
        else:
            summary = json.loads((folder / "summary.json").read_text())
            part = data.draw(st.sampled_from(["instance", "settlement"]))
            summary[part][data.draw(st.sampled_from(sorted(summary[part])))] = data.draw(json_values)
            (folder / "summary.json").write_text(json.dumps(summary))
        code, err = cli("report", folder, "-o", page, "-q")
        _assert_clean(code, err)
        assert page.exists() == (code == 0)


def test_checked_result_tables_still_read_back_from_parquet(tmp_path):
    out = tmp_path / "out"
    assert cli("solve", WORKED, "-o", out, "--format", "parquet", "-q")[0] == 0
    code, err = cli("report", out, "-o", tmp_path / "r.html", "-q")
    assert code == 0, err
    code, err = cli("settle", WORKED, "--previous", out, "-o", tmp_path / "settled", "-q")
    assert code == 0, err


def test_a_json_row_without_a_required_key_is_missing_not_mistyped(tmp_path):
    def change(doc):
        del doc["requests"][0]["submitted_at"]

    code, err = cli("validate", worked(tmp_path, change))
    refused(code, err, "requests, row 1, field 'submitted_at': value is missing")
    assert "has type" not in err


@pytest.mark.parametrize("table, field, value, command", [
    ("limits", "limit_cube", "1e308", "clear"),  # was carried into round 2 and written back as inf
    ("grants", "max_fee_per_cube", "1e308", "report"),  # the report's chart axis overflowed: exit 1
    ("grants", "max_fee_per_cube", "-5", "report"),
])
def test_a_result_read_back_out_of_what_optalloc_writes_is_refused(tmp_path, table, field, value, command):
    first = tmp_path / "c1"
    assert cli("clear", SMALL, "--round", "1", "-o", first, "-q")[0] == 0
    path = first / f"{table}.csv"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.loc[0, field] = value
    frame.to_csv(path, index=False)
    if command == "clear":
        refused(*cli("clear", SMALL, "--previous", first, "-o", tmp_path / "c2"), f"{table}.csv", "row 1", field, "out of range")
        assert not (tmp_path / "c2").exists()
    else:
        refused(*cli("report", first, "-o", tmp_path / "r.html"), f"{table}.csv", "row 1", field, "out of range")


@pytest.mark.parametrize("damage, field", [
    (lambda rounds: rounds[0].update(round="abc"), "rounds[0].round"),
    (lambda rounds: rounds[0].update(round=None), "rounds[0].round"),
    (lambda rounds: rounds[0].update(round=[1]), "rounds[0].round"),
    (lambda rounds: rounds[0].update(storage_type=None), "rounds[0].storage_type"),
    (lambda rounds: rounds.__setitem__(0, 5), "rounds[0]"),
])
def test_a_damaged_summary_in_a_previous_folder_is_refused_naming_the_field(tmp_path, damage, field):
    """A summary.json whose rounds were damaged was exit 1 (int("abc"), iterating a number)."""
    first = tmp_path / "c1"
    assert cli("clear", SMALL, "--round", "1", "-o", first, "-q")[0] == 0
    summary = json.loads((first / "summary.json").read_text())
    damage(summary["rounds"])
    (first / "summary.json").write_text(json.dumps(summary))
    refused(*cli("clear", SMALL, "--previous", first, "-o", tmp_path / "c2"), "summary.json", f"field '{field}'")


def test_a_summary_whose_rounds_are_not_a_list_is_refused(tmp_path):
    first = tmp_path / "c1"
    assert cli("clear", SMALL, "--round", "1", "-o", first, "-q")[0] == 0
    summary = json.loads((first / "summary.json").read_text())
    summary["rounds"] = 5
    (first / "summary.json").write_text(json.dumps(summary))
    refused(*cli("clear", SMALL, "--previous", first, "-o", tmp_path / "c2"), "summary.json", "field 'rounds'")


def test_a_simulated_market_without_bids_is_written_not_exit_1(tmp_path):
    """--margin 0: no seller bids, and the empty settlement's columns had no unit (exit 1)."""
    out = tmp_path / "sim"
    code, err = cli("simulate", "--sellers", "20", "--margin", "0", "-o", out, "-q")
    assert code == 0, err
    assert len(pd.read_csv(out / "bids.csv")) == 0 and len(pd.read_csv(out / "settlement.csv")) == 0


@pytest.mark.parametrize("credit, fee, field", [("abc", "5", "credit"), ("1", "-5", "reservation_fee"), ("inf", "5", "credit")])
def test_a_settlement_given_to_forecast_must_hold_numbers(tmp_path, credit, fee, field):
    """forecast --settlement checked the columns' names only: text was exit 1 deep in the scores, and negative fees
    were taken."""
    inst = tmp_path / "h"
    assert cli("generate", "-o", inst, "--sellers", "20", "--history-weeks", "10", "-q")[0] == 0
    settlement = tmp_path / "settlement.csv"
    settlement.write_text(f"seller_id,credit,reservation_fee\nS00000,1,2\nS00001,{credit},{fee}\n")
    refused(*cli("forecast", inst, "-o", tmp_path / "f", "--settlement", settlement), "settlement.csv", "row 2", f"field '{field}'")
    assert not (tmp_path / "f").exists()


@pytest.mark.parametrize("weeks", ["1", "2", "3"])
def test_generate_with_a_few_weeks_of_history_writes_a_valid_instance(tmp_path, weeks):
    """Fewer than 4 weeks left every on_hand_cube missing (a rolling window shifted past the data), and generate
    refused its own instance naming the user's input."""
    out = tmp_path / "g"
    code, err = cli("generate", "-o", out, "--sellers", "20", "--history-weeks", weeks, "-q")
    assert code == 0, err
    assert cli("validate", out, "-q")[0] == 0


def test_a_wide_productivity_error_keeps_the_simulated_market_within_the_engine_s_bounds(tmp_path):
    """--productivity-error 100 (allowed, 0-100) made fees of ~1e18 (exit 4: int64 cents overflowed) and sales of ~1e22;
    the simulated sellers' productivity, fees and sales are capped where the engine's inputs are."""
    out = tmp_path / "sim"
    code, err = cli("simulate", "--sellers", "20", "--productivity-error", "100", "-o", out, "-q")
    assert code == 0, err
    assert pd.read_csv(out / "bids.csv")["max_fee_per_cube"].max() <= 1e6
    assert pd.read_csv(out / "truth.csv")["sales"].max() <= 1e15


@pytest.mark.parametrize("name", ["grant_sales.csv", "sales.parquet", "instance.json", "notes.csv"])
def test_an_output_named_like_an_instance_file_inside_the_instance_is_refused(tmp_path, name):
    """`solve inst -o inst/grant_sales.csv` wrote a folder the instance then tried to read as its table: every later
    run on the instance failed. A plain subfolder (`-o inst/out`) is fine."""
    inst = copy_small(tmp_path / "inst")
    refused(*cli("solve", inst, "-o", inst / name), name, "read as one of its files")
    assert not (inst / name).exists() or name == "instance.json"
    assert cli("validate", inst, "-q")[0] == 0
    assert cli("solve", inst, "-o", inst / "out", "-q")[0] == 0


def test_an_output_name_too_long_to_write_beside_its_place_is_refused_before_the_work(tmp_path):
    """A 245-byte name passed the checks, and the run failed after all its work: its temporary sibling
    (.NAME.PID.partial) was past the file system's 255 bytes."""
    refused(*cli("solve", WORKED, "-o", tmp_path / ("x" * 245)), "too long", "at most 238 bytes")
    assert cli("solve", WORKED, "-o", tmp_path / ("x" * 238), "-q")[0] == 0


def test_a_solve_stopped_without_an_answer_does_not_advise_the_switch_already_given():
    """--allow-nonoptimal with a limit too short to find any answer: the advice was to pass allow_nonoptimal."""
    from optalloc.errors import SolveError
    from optalloc.schemas import SolverOptions
    from optalloc.solver import STOPPED, SolveOutcome, check_outcome

    with pytest.raises(SolveError) as given:
        check_outcome(SolveOutcome(STOPPED, None, "time limit"), SolverOptions(allow_nonoptimal=True), "baseline")
    assert "pass allow_nonoptimal" not in str(given.value) and "raise --time-limit" in str(given.value)
    with pytest.raises(SolveError) as not_given:
        check_outcome(SolveOutcome(STOPPED, 5.0, "time limit"), SolverOptions(), "baseline")
    assert "pass allow_nonoptimal" in str(not_given.value)


def test_a_column_named_twice_in_a_header_is_refused_by_its_name(tmp_path):
    """pandas renames the second of two equal header names, and the refusal named a column the file does not have
    ("field 'productivity.1': unknown column")."""
    inst = copy_small(tmp_path / "inst")
    path = inst / "sellers.csv"
    lines = path.read_text().splitlines()
    lines[0] += ",productivity"
    path.write_text("\n".join(line if i == 0 else line + ",1" for i, line in enumerate(lines)) + "\n")
    code, err = cli("validate", inst)
    refused(code, err, "sellers.csv", "field 'productivity'", "names this column twice")
    assert "productivity.1" not in err
