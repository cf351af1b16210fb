"""Rewrite the generated blocks of the docs pages from their declarations in optalloc/tables.py.

    python docs/generate.py           # rewrite the pages in place
    python docs/generate.py --check   # exit 1, naming the page, where a page differs (tests/test_docs.py does this)

A block is `<!-- table NAME -->` ... `<!-- /table -->` (one written table's columns, units and meanings) or
`<!-- units -->` ... `<!-- /units -->` (every unit with its decimals and the columns that have it) or `<!-- rules -->` ...
`<!-- /rules -->` (the built-in clearing rules of the registry, optalloc.rules, with what each does).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
BLOCK = re.compile(r"(<!-- (table (?P<name>[a-z_]+)|units|rules) -->\n)(.*?)(<!-- /(table|units|rules) -->)", re.S)


def units_table() -> str:
    from optalloc import tables, units

    by_unit: dict = {}
    for table in tables.WRITTEN.values():
        for col in table.columns:
            if col.unit is not None:
                by_unit.setdefault(col.unit, []).append(col.name)
    order = [u for u in vars(units).values() if isinstance(u, units.Unit)]
    rows = [f"| {u.name} | {u.decimals} | {', '.join(f'`{n}`' for n in dict.fromkeys(by_unit[u]))} |" for u in order if u in by_unit]
    return "\n".join(["| unit | decimals | columns |", "|---|---|---|", *rows])


def rules_table() -> str:
    from optalloc import rules

    rows = [f"| `{name}`{' (default)' if name == rules.DEFAULT else ''} | {rules.DESCRIPTIONS[name].removesuffix(' (the default)')} |"
            for name in rules.BUILT_IN]
    return "\n".join(["| clearing_rule | what it does |", "|---|---|", *rows])


def render(text: str) -> str:
    from optalloc import tables

    def block(m: re.Match) -> str:
        if m[2] == "rules":
            body = rules_table()
        else:
            body = tables.docs_table(tables.WRITTEN[m["name"]]) if m["name"] else units_table()
        return f"{m[1]}{body}\n{m[5]}"

    return BLOCK.sub(block, text)


def main(argv: list[str]) -> int:
    stale = []
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text(encoding="utf-8")
        new = render(text)
        if new != text:
            stale.append(page.name)
            if "--check" not in argv:
                page.write_text(new, encoding="utf-8")
    if stale and "--check" in argv:
        print(f"out of date (run python docs/generate.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
