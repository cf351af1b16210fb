"""The docs say what is true now: their code runs as written, their generated tables match the declarations they
come from, their links lead somewhere, and the README stays a front page."""

from __future__ import annotations

import csv
import io
import re
import sys

import pytest
from conftest import INSTANCES, ROOT

from optalloc import tables

DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
sys.path.insert(0, str(DOCS))
import generate  # noqa: E402 -- docs/generate.py, the script that writes the generated blocks


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def test_the_generated_tables_match_their_declarations():
    for page in DOCS.glob("*.md"):
        text = page.read_text(encoding="utf-8")
        assert generate.render(text) == text, f"{page.name} is out of date: run python docs/generate.py"
    documented = set(re.findall(r"<!-- table ([a-z_]+) -->", "".join(p.read_text(encoding="utf-8") for p in DOCS.glob("*.md"))))
    assert set(tables.RESULTS) | {"needs", "performance", "backtest"} <= documented


def test_a_stale_generated_block_is_found(tmp_path):
    text = (DOCS / "outputs.md").read_text(encoding="utf-8")
    stale = text.replace("| `limit_cube` | cube |", "| `limit_cube` | $ |", 1)
    assert stale != text and generate.render(stale) == text


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p.read_text(encoding="utf-8"), "python")], ids=lambda p: p.name)
def test_the_python_on_each_page_runs_as_written(page, tmp_path, real_process):
    """Every ```python block of the page, in order, in one fresh interpreter, from a folder holding the shipped
    instances (as the repository's folder does): what the page shows a reader is what works."""
    (tmp_path / "instances").symlink_to(INSTANCES)
    code = "\n".join(blocks(page.read_text(encoding="utf-8"), "python"))
    done = real_process.run(argv=[sys.executable, "-c", code], cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def test_every_shell_block_that_runs_is_run_by_a_test():
    """```bash blocks are commands a reader runs as they are: each is run by a test (the two commands by .ci/run,
    the nightly job and the reports by test_first_hour, the worked example below). Anything else is ```sh: commands
    that take minutes (benchmarks, large instances), shown with what they print."""
    run_by_tests = {("README.md", "## Two commands"), ("README.md", "## The worked example"), ("nightly.md", "# The nightly job"),
                    ("outputs.md", "## Reports")}
    found = set()
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for block in blocks(text, "bash"):
            heading = [line for line in text[: text.index(block)].splitlines() if line.startswith("#")][-1]
            found.add((page.name, heading))
    assert found == run_by_tests


def test_the_readme_worked_example_runs_and_shows_the_settlement(tmp_path, real_process):
    block = blocks((ROOT / "README.md").read_text(encoding="utf-8").split("## The worked example", 1)[1], "bash")[0]
    (tmp_path / "instances").symlink_to(INSTANCES)
    script = f'set -euo pipefail\noptalloc() {{ "{sys.executable}" -m optalloc.cli "$@"; }}\n{block}'
    done = real_process.run(argv=["bash", "-c", script], cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))  # what the README says the seller pays: $20,000, credits $20,000, $0
    assert any(float(r["reservation_fee"]) == 20000 and float(r["credit"]) == 20000 and float(r["net"]) == 0 for r in rows), rows


def test_links_lead_somewhere_and_the_readme_is_a_front_page():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"
    assert all(f"docs/{p.name}" in readme for p in DOCS.glob("*.md"))


def test_user_docs_carry_no_history():
    """Figures and claims are current; which commit measured what, and what was tried, is in benchmarks/HISTORY.md
    and git."""
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        assert not re.search(r"\b(on|before|after) [0-9a-f]{7}\b", text), page.name
        assert "was measured" not in text and "re-measured" not in text.lower(), page.name


def test_reading_your_first_results_says_what_solve_writes(tmp_path):
    """docs/outputs.md walks through small_network's results with their figures: they are the figures solve writes."""
    import json

    import pandas as pd

    from optalloc.cli import run

    assert run(["solve", str(INSTANCES / "small_network"), "-o", str(tmp_path / "o"), "-q"]) == 0
    text = (DOCS / "outputs.md").read_text(encoding="utf-8").split("## Reading your first results", 1)[1].split("\n## ", 1)[0]
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    for figure in (f"{summary['baseline']['allocated_cube']:,.0f} cube-months", f"{summary['baseline']['pool_cube']:,.0f} cube-months",
                   f"{summary['settlement']['grants']} requests", f"${summary['settlement']['reservation_fees']:,.2f}",
                   f"${summary['settlement']['credits']:,.2f}", f"${summary['settlement']['net']:,.2f} net"):
        assert figure in text, figure
    prices = pd.read_csv(tmp_path / "o" / "round_prices.csv").set_index(["round", "storage_type"])
    assert prices.loc[(1, "standard"), ["requests", "granted_requests", "granted_cube", "clearing_price"]].tolist() == [11, 10, 5771.0, 2.03]
    grants = pd.read_csv(tmp_path / "o" / "grants.csv", keep_default_na=False).set_index(["round", "request_id"])
    q04, q42 = grants.loc[(1, "Q04")], grants.loc[(1, "Q42")]
    assert (q42["granted_cube"], q42["max_fee_per_cube"]) == (1158.0, 6.55)
    assert (q04["granted_cube"], q04["max_cube"], q04["status"], q04["reason"], q04["paradoxically_rejected"], q04["price_faced"]) == (
        138.0, 846.0, "partially_granted", "outbid", True, 5.42)
    pools = pd.read_csv(tmp_path / "o" / "pools.csv")
    november = pools[(pools["round"] == 1) & (pools["storage_type"] == "standard") & (pools["month"] == "2026-11")].set_index("fc_id")
    assert november.loc[["FC0", "FC3"], "pool_cube"].sum() == 1296 and november.loc[["FC1", "FC4"], "pool_after"].sum() == 1197
    q02 = pd.read_csv(tmp_path / "o" / "settlement.csv").set_index(["round", "request_id"]).loc[(1, "Q02")]
    assert (q02["round_clearing_price"], q02["fee_per_cube"]) == (3.33, 1.61)
