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
