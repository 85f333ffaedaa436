"""What a report says, read back from its files: the page's sections (by heading) with their text, tables and
images, its navigation, and the exports' keys and values. ``tests/data/pages/*.json`` hold these fingerprints of
reports rendered before the report was built from sections (commit 827a75d); ``test_sections`` renders the same
stores now and compares.

Images are compared by their alt text, and byte for byte where the same matplotlib drew them (another version may
anti-alias a line differently). Run ``python -m tests.pages FOLDER`` to print a folder's fingerprint."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.section = "header"
        self.sections: dict[str, dict[str, Any]] = {}
        self.nav: list[str] = []
        self.skip = 0  # inside <script> or <style>
        self.heading: list[str] | None = None
        self.cell: list[str] | None = None
        self.in_nav = False
        self.alert = False
        self._open("header")

    def _open(self, name: str) -> None:
        self.section = name
        self.sections[name] = {"text": [], "tables": [], "images": []}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        here = self.sections[self.section]
        if tag in ("script", "style") or (tag == "p" and found.get("role") == "alert"):
            self.alert = tag == "p"
            self.skip += 1  # a provenance warning says where the code ran from (a dirty checkout), not the results
        elif tag == "h2":
            self.heading = []
        elif tag == "nav":
            self.in_nav = True
        elif tag == "a" and self.in_nav:
            self.nav.append(found.get("href") or "")
        elif tag == "table":
            here["tables"].append([])
        elif tag == "tr" and here["tables"]:
            here["tables"][-1].append([])
        elif tag in ("td", "th"):
            self.cell = []
        elif tag == "img":
            uri = found.get("src") or ""
            here["images"].append([found.get("alt") or "", hashlib.sha256(uri.encode()).hexdigest()[:16]])

    def handle_endtag(self, tag: str) -> None:
        here = self.sections[self.section]
        if tag in ("script", "style") or (tag == "p" and self.alert):
            self.skip -= 1
            self.alert = False
        elif tag == "h2" and self.heading is not None:
            self._open(_squash("".join(self.heading)))
            self.heading = None
        elif tag == "nav":
            self.in_nav = False
        elif tag in ("td", "th") and self.cell is not None and here["tables"] and here["tables"][-1]:
            here["tables"][-1][-1].append(_squash("".join(self.cell)))
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.skip or self.in_nav:
            return
        if self.heading is not None:
            self.heading.append(data)
            return
        self.sections[self.section]["text"].append(data)
        if self.cell is not None:
            self.cell.append(data)


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def page(html: str) -> dict[str, Any]:
    """{nav: [hrefs], sections: {heading: {text, tables, images}}} of a report page."""
    reader = _Reader()
    reader.feed(html)
    sections = {name: {**found, "text": _squash("".join(found["text"]))} for name, found in reader.sections.items()}
    return {"nav": reader.nav, "sections": sections}


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def exports(folder: Path) -> dict[str, Any]:
    """The JSON export's keys with a digest of each value, the leaderboard rows' keys, the CSV headers, the Markdown
    and LaTeX text, from ``report.json``, ``report.md``, ``report.tex`` and the CSV files in ``folder``."""
    payload = json.loads((folder / "report.json").read_text())
    headers = {}
    for path in sorted(folder.glob("*.csv")):
        with open(path, newline="") as handle:
            headers[path.stem] = next(csv.reader(handle), [])
    return {
        "json": {key: _digest(value) for key, value in payload.items()},
        "leaderboard_keys": list(payload["leaderboard"][0]),
        "csv": headers,
        "markdown": (folder / "report.md").read_text(),
        "latex": (folder / "report.tex").read_text(),
    }


def fingerprint(folder: Path) -> dict[str, Any]:
    import matplotlib

    return {
        "matplotlib": matplotlib.__version__,
        "page": page((folder / "report.html").read_text()),
        "exports": exports(folder),
    }


if __name__ == "__main__":
    print(json.dumps(fingerprint(Path(sys.argv[1])), indent=1, ensure_ascii=False))
