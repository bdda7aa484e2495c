"""The annual report as a PDF (issue 11): reportlab lays the document out, matplotlib draws the monthly chart.

Every number in the chart is also printed in the table under it, so a reader (or a test through `pdftotext`)
can check the figures exactly. Numbers are rounded here only, for presentation (decision 0003): CO2 to 3
decimals as in the CSV, shares and deviations to 2. Text is set in DejaVu Sans, which matplotlib ships, embedded
as a subset, so names beyond Latin-1 print and the text can be extracted.
"""

import io
from pathlib import Path
from xml.sax.saxutils import escape

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import cm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.platypus import Image, KeepTogether, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from cems.api.models import AnnualReport

FONT, BOLD = "DejaVuSans", "DejaVuSans-Bold"
STACK_COLOURS = ("#2459a8", "#8fa3bf", "#2f8f46", "#c25e00", "#6b4a9b", "#6b7482")  # the dashboard's palette
CALC_COLOUR = "#1d2430"
PAGE = landscape(A4)
MARGIN = 1.5 * cm


def _fonts() -> None:
    if FONT in pdfmetrics.getRegisteredFontNames():
        return
    ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    pdfmetrics.registerFont(TTFont(FONT, str(ttf / "DejaVuSans.ttf")))
    pdfmetrics.registerFont(TTFont(BOLD, str(ttf / "DejaVuSans-Bold.ttf")))


def t3(v: float | None) -> str:
    """Tonnes as printed: 3 decimals with thousands separators; a dash for no figure."""
    return "–" if v is None else f"{v:,.3f}"


def pct(v: float | None, digits: int = 2) -> str:
    return "–" if v is None else f"{v:,.{digits}f} %"


def monthly_chart(report: AnnualReport) -> bytes:
    """A PNG: each month's CO2 as bars stacked by stack (substituted parts hatched), the fuel calculation as
    markers. Drawn on a Figure of its own (no pyplot state), so requests may render at once."""
    labels = [m.month for m in report.months]
    x = np.arange(len(labels))
    fig = Figure(figsize=(10.5, 3.4), dpi=200, facecolor="white")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    bottom = np.zeros(len(labels))
    for i, s in enumerate(report.stacks):
        co2 = np.array([m.co2_t for m in s.months])
        sub = np.array([m.substituted_t for m in s.months])
        colour = STACK_COLOURS[i % len(STACK_COLOURS)]
        ax.bar(x, co2, 0.62, bottom=bottom, color=colour, label=f"{s.stack} ({s.name})")
        if sub.any():
            ax.bar(x, sub, 0.62, bottom=bottom + co2 - sub, color="none", edgecolor="#f7c38b", hatch="////",
                   linewidth=0, label="substituted hours (hatched)" if i == 0 else None)
        bottom += co2
    calc = [m.calculated_t for m in report.months]
    if any(c is not None for c in calc):
        ax.plot(x, [np.nan if c is None else c for c in calc], "D", color=CALC_COLOUR, markersize=5,
                label="fuel calculation (days with fuel data)")
    ax.set_xticks(x, [label[5:] for label in labels])
    ax.set_xlabel(f"month of {report.year} ({report.timezone})")
    ax.set_ylabel("t CO2")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.set_xlim(-0.6, max(len(labels), 12) - 0.4)
    ax.grid(axis="y", color="#e3e6eb")
    ax.set_axisbelow(True)
    ax.spines[["top", "right"]].set_visible(False)
    if report.stacks:
        ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    out = io.BytesIO()
    fig.savefig(out, format="png", bbox_inches="tight")
    return out.getvalue()


def _styles() -> dict[str, ParagraphStyle]:
    base = getSampleStyleSheet()
    body = ParagraphStyle("body", base["BodyText"], fontName=FONT, fontSize=8.5, leading=11)
    return {"title": ParagraphStyle("title", base["Title"], fontName=BOLD, fontSize=17, alignment=0, spaceAfter=2),
            "h2": ParagraphStyle("h2", base["Heading2"], fontName=BOLD, fontSize=11.5, spaceBefore=8, spaceAfter=4),
            "body": body, "cell": ParagraphStyle("cell", body, fontSize=7.5, leading=9),
            "small": ParagraphStyle("small", body, fontSize=7.5, leading=9.5, textColor=colors.HexColor("#4f5a6b"))}


def _table(rows: list[list], widths: list[float] | None = None, total_row: bool = False,
           left: tuple[int, ...] = (0,)) -> Table:
    """A table with a header row repeated on each page; numbers right-aligned, the `left` columns (text) left."""
    t = Table(rows, colWidths=widths, repeatRows=1, hAlign="LEFT")
    style = [("FONT", (0, 0), (-1, -1), FONT, 7.5), ("FONT", (0, 0), (-1, 0), BOLD, 7.5),
             ("TEXTCOLOR", (0, 0), (-1, 0), colors.HexColor("#4f5a6b")),
             ("LINEBELOW", (0, 0), (-1, 0), 0.6, colors.HexColor("#9aa3b0")),
             ("LINEBELOW", (0, 1), (-1, -1), 0.25, colors.HexColor("#e3e6eb")),
             ("ALIGN", (0, 0), (-1, -1), "RIGHT"), ("VALIGN", (0, 0), (-1, -1), "TOP"),
             *(("ALIGN", (c, 0), (c, -1), "LEFT") for c in left),
             ("TOPPADDING", (0, 0), (-1, -1), 1.5), ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5)]
    if total_row:
        style += [("FONT", (0, -1), (-1, -1), BOLD, 7.5), ("LINEABOVE", (0, -1), (-1, -1), 0.6, colors.black)]
    t.setStyle(TableStyle(style))
    return t


def _summary(r: AnnualReport, st: dict) -> Table:
    share = None if not r.total_t else r.substituted_t / r.total_t * 100
    rows = [["Plant", f"{r.name} ({r.plant})"], ["Compliance year", f"{r.year}: {r.start} to {r.end} (exclusive)"],
            ["Figures up to", r.as_of], ["Regime / substitution", f"{r.regime} / {r.substitution}"],
            ["Total CO2 (CEMS), t", t3(r.total_t)], ["Fuel calculation, t", t3(r.calculated_t)],
            ["On substituted hours, t", f"{t3(r.substituted_t)} ({pct(share)})"],
            ["Stack-hours", f"measured {r.hours.measured:,}, substituted {r.hours.substituted:,}, "
                            f"stopped {r.hours.stopped:,}, missing {r.hours.missing:,}"],
            ["Complete", "yes: the year is over and every hour is final" if r.complete else
             f"no: {r.not_final:,} stack-hours not final"], ["Generated", r.generated_at]]
    t = Table(rows, colWidths=[4.5 * cm, 18 * cm], hAlign="LEFT")
    t.setStyle(TableStyle([("FONT", (0, 0), (-1, -1), FONT, 8.5), ("FONT", (0, 0), (0, -1), BOLD, 8.5),
                           ("TOPPADDING", (0, 0), (-1, -1), 1), ("BOTTOMPADDING", (0, 0), (-1, -1), 1)]))
    return t


def _monthly(r: AnnualReport) -> Table:
    head = ["Month", *[f"{s.stack}, t" for s in r.stacks], "Plant, t", "Fuel calc., t", "Fuel days",
            "CEMS on fuel days, t", "Deviation", "Flag"]
    rows = [head]
    for i, m in enumerate(r.months):
        rows.append([m.month, *[t3(s.months[i].co2_t) for s in r.stacks], t3(m.co2_t), t3(m.calculated_t),
                     str(m.fuel_days), t3(m.cems_on_fuel_days_t) if m.fuel_days else "–", pct(m.deviation_pct),
                     "flagged" if m.flagged else ""])
    rows.append(["Year", *[t3(s.total_t) for s in r.stacks], t3(r.total_t), t3(r.calculated_t),
                 str(sum(m.fuel_days for m in r.months)), "", "", ""])
    return _table(rows, total_row=True)


def _hours_table(r: AnnualReport, i: int, st: dict) -> Table:
    s = r.stacks[i]

    def methods(d: dict[str, int]) -> str:
        return ", ".join(f"{k} {n}" for k, n in d.items()) or "–"

    rows = [["Month", "Measured", "Substituted", "Stopped", "Missing", "Substituted, t", "CO2, t", "Method codes"]]
    for m in s.months:
        rows.append([m.month, m.measured_hours, m.substituted_hours, m.stopped_hours, m.missing_hours,
                     t3(m.substituted_t), t3(m.co2_t), methods(m.methods)])
    rows.append(["Year", s.hours.measured, s.hours.substituted, s.hours.stopped, s.hours.missing, t3(s.substituted_t),
                 t3(s.total_t), methods(s.methods)])
    return _table(rows, total_row=True, left=(0, 7))


def _revisions(r: AnnualReport, st: dict) -> list:
    if not r.revisions:
        return [Paragraph("No final hour of the year was revised.", st["body"])]
    rows = [["Stack", "Hour", "Revised at", "Revision", "Before, t", "After, t", "Cause"]]
    for v in r.revisions:
        rows.append([v.stack, v.hour, v.revised_at[:19], "–" if v.revision is None else v.revision,
                     t3(v.old_co2_t), t3(v.new_co2_t), Paragraph(escape(v.cause), st["cell"])])
    return [_table(rows, [1.6 * cm, 4.3 * cm, 3.4 * cm, 1.5 * cm, 2.2 * cm, 2.2 * cm, 9 * cm], left=(0, 1, 2, 6))]


def _constants(r: AnnualReport, st: dict) -> list:
    rows = [["Stack", "Regime", "T0, K", "P0, kPa", "M/Vm, kg/m3", "Min. valid", "Hours", "From", "To",
             "Flow / CO2 basis", "Calibration y = a + b x"]]
    for c in r.constants:
        cal = "; ".join(f"{k}: a={a:g}, b={b:g}" for k, (a, b) in c.calibration.items()) or "none (a=0, b=1)"
        rows.append([c.stack, c.regime or "–", "–" if c.t0_k is None else f"{c.t0_k:g}",
                     "–" if c.p0_kpa is None else f"{c.p0_kpa:.3f}",
                     "–" if c.co2_density_kg_m3 is None else f"{c.co2_density_kg_m3:.6f}",
                     "–" if c.min_valid_pct is None else f"{c.min_valid_pct} %", f"{c.hours:,}", c.first_hour[:16],
                     c.last_hour[:16], f"{c.flow_basis} / {c.co2_basis}", Paragraph(escape(cal), st["cell"])])
    if len(rows) == 1:
        return [Paragraph("No hour figures in the year.", st["body"])]
    return [_table(rows, [1.4 * cm, 1.6 * cm, 1.3 * cm, 1.8 * cm, 2.3 * cm, 1.6 * cm, 1.3 * cm, 2.9 * cm, 2.9 * cm,
                          2.6 * cm, 6 * cm], left=(0, 1, 7, 8, 9, 10))]


def _calibrations(r: AnnualReport, st: dict) -> list:
    if not r.calibrations:
        return [Paragraph("No readings flagged C in the year.", st["body"])]
    rows = [["Stack", "From", "To", "Minutes", "Readings"]]
    rows += [[c.stack, c.start, c.end, c.minutes, f"{c.readings:,}"] for c in r.calibrations]
    return [_table(rows, [1.6 * cm, 5 * cm, 5 * cm, 2 * cm, 2.2 * cm], left=(0, 1, 2))]


def annual_pdf(report: AnnualReport) -> bytes:
    """The annual report as PDF bytes (landscape A4)."""
    _fonts()
    st = _styles()
    r = report
    out = io.BytesIO()
    doc = SimpleDocTemplate(out, pagesize=PAGE, leftMargin=MARGIN, rightMargin=MARGIN, topMargin=MARGIN,
                            bottomMargin=MARGIN, title=f"Annual CO2 report {r.plant} {r.year}",
                            author="carbon-cems", subject=f"{r.name} ({r.plant}), compliance year {r.year}")
    width = PAGE[0] - 2 * MARGIN
    png = monthly_chart(r)
    chart = Image(io.BytesIO(png), width=width, height=width * 3.4 / 10.5 * 0.92, kind="proportional")
    story = [Paragraph(f"Annual CO<sub>2</sub> report: {escape(r.name)} ({escape(r.plant)}), {r.year}", st["title"]),
             Paragraph("CEMS hour figures summed by the plant's local calendar month (DESIGN §4, §7). Rounded for "
                       "presentation only; the JSON report carries the unrounded figures.", st["small"]),
             Spacer(1, 4), _summary(r, st),
             Paragraph("Monthly CO<sub>2</sub>", st["h2"]), chart,
             Paragraph("The chart's figures, t CO2. Fuel calculation: the plant's fuel data (fuel x carbon x "
                       "oxidation x 44/12); the deviation compares it with CEMS over the same days.", st["small"]),
             _monthly(r)]
    for i, s in enumerate(r.stacks):
        story.append(KeepTogether([Paragraph(f"Hours by status and method: stack {escape(s.stack)} "
                                             f"({escape(s.name)})", st["h2"]), _hours_table(r, i, st)]))
    story += [Paragraph("Revisions after the lateness window", st["h2"]), *_revisions(r, st),
              Paragraph("Regime and constants used", st["h2"]),
              Paragraph(f"Plant regime {escape(r.regime)}, substitution {escape(r.substitution)}. Per stack, each set "
                        "of constants stored with the hour figures; bases and calibration from the current "
                        "configuration.", st["small"]), *_constants(r, st),
              Paragraph("Calibration periods (readings flagged C)", st["h2"]), *_calibrations(r, st)]

    def footer(canvas, doc_) -> None:
        canvas.saveState()
        canvas.setFont(FONT, 7)
        canvas.setFillColor(colors.HexColor("#4f5a6b"))
        canvas.drawString(MARGIN, MARGIN / 2,
                          f"carbon-cems annual report {r.plant} {r.year}, generated {r.generated_at}")
        canvas.drawRightString(PAGE[0] - MARGIN, MARGIN / 2, f"page {doc_.page}")
        canvas.restoreState()

    doc.build(story, onFirstPage=footer, onLaterPages=footer)
    return out.getvalue()
