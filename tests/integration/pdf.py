"""Read a PDF the way a person would: Poppler's `pdftoppm` renders its pages, `pdftotext` gives the printed text.

Both come from Debian's `poppler-utils`, installed when missing (as root, or through sudo) as `browser.py`
installs Chromium.
"""

import re
import shutil
import subprocess
from pathlib import Path

from cems.localservices import apt_install

PACKAGE = "poppler-utils"
TOOLS = ("pdftoppm", "pdftotext")


def ensure_poppler() -> None:
    if all(shutil.which(t) for t in TOOLS):
        return
    apt_install([PACKAGE], list(TOOLS), quiet=True)


def pdf_pages(pdf: bytes, workdir: Path, dpi: int = 60) -> list[Path]:
    """The pages as PNG images, in order."""
    ensure_poppler()
    workdir.mkdir(parents=True, exist_ok=True)
    src = workdir / "report.pdf"
    src.write_bytes(pdf)
    subprocess.run(["pdftoppm", "-png", "-r", str(dpi), str(src), str(workdir / "page")], check=True)
    return sorted(workdir.glob("page-*.png"), key=lambda p: int(re.search(r"-(\d+)\.png$", p.name).group(1)))


def pdf_text(pdf: bytes, workdir: Path) -> str:
    """The printed text, table rows kept on one line each (`pdftotext -layout`)."""
    ensure_poppler()
    workdir.mkdir(parents=True, exist_ok=True)
    src = workdir / "report-text.pdf"
    src.write_bytes(pdf)
    return subprocess.run(["pdftotext", "-layout", str(src), "-"], check=True, capture_output=True,
                          text=True).stdout


def section(text: str, heading: str, next_heading: str | None = None) -> str:
    """The text from the line holding `heading` to the line holding `next_heading` (or the end)."""
    start = text.index(heading)
    end = text.index(next_heading, start) if next_heading else len(text)
    return text[start:end]


def number(cell: str) -> float:
    """A number as printed (thousands separators)."""
    return float(cell.replace(",", ""))
