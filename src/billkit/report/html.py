"""index.html: one self-contained page (no script, no external asset) under a strict CSP set in a meta tag.

Views by practice, by PCI DSS requirement, by control, by host and by evidence file; inline SVG charts.
Navigation is plain anchors, so the page works offline, from a file and under ``default-src 'none'``.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from html import escape
from pathlib import Path

from billkit.controls import PRACTICES
from billkit.report.model import STATUSES, ControlStatus, Report

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"
COLOURS = {
    "satisfied": "#2e7d32",
    "not satisfied": "#c62828",
    "waived": "#ef6c00",
    "manual": "#6a1b9a",
    "not assessed": "#9e9e9e",
}
CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:1em;color:#222}
nav a{margin-right:1em}table{border-collapse:collapse;width:100%;margin:.5em 0}
td,th{border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}th{background:#f4f4f4}
.st{color:#fff;border-radius:3px;padding:0 5px;white-space:nowrap}.stale{color:#c62828;font-weight:bold}
:target{outline:3px solid #1565c0;background:#e3f2fd}.banner{padding:.6em;border-radius:4px;margin:.5em 0}
.warn{background:#fff3e0;border:1px solid #ef6c00}code{font-size:12px;word-break:break-all}
section{margin-top:2em}h3{margin:.8em 0 .2em}"""


def _badge(status: str) -> str:
    return f'<span class="st" style="background:{COLOURS[status]}">{escape(status)}</span>'


def _ctl(cid: str) -> str:
    return f'<a href="#ctl-{escape(cid)}">{escape(cid)}</a>'


def _age_days(collected: str, now: dt.datetime) -> float:
    return (now - dt.datetime.fromisoformat(collected)).total_seconds() / 86400


def _bars(title: str, rows: list[tuple[str, str, dict[str, int]]]) -> str:
    """A horizontal stacked bar per row (label, anchor, counts by status)."""
    h, w, left = 18, 560, 210
    parts = [
        f'<svg role="img" aria-label="{escape(title)}" width="{left + w + 40}" height="{h * len(rows) + 30}"'
        ' xmlns="http://www.w3.org/2000/svg"><title>' + escape(title) + "</title>"
    ]
    for i, (label, anchor, counts) in enumerate(rows):
        total, x, y = sum(counts.values()) or 1, float(left), i * h + 4
        parts.append(f'<a href="#{escape(anchor)}"><text x="0" y="{y + 13}" font-size="12">{escape(label)}</text></a>')
        for status in STATUSES:
            n = counts.get(status, 0)
            if n:
                width = w * n / total
                parts.append(
                    f'<rect x="{x:.1f}" y="{y}" width="{width:.1f}" height="{h - 4}" fill="{COLOURS[status]}">'
                    f"<title>{escape(label)}: {n} {escape(status)}</title></rect>"
                )
                x += width
        parts.append(f'<text x="{left + w + 4}" y="{y + 13}" font-size="11">{sum(counts.values())}</text>')
    legend_y = h * len(rows) + 20
    for j, status in enumerate(STATUSES):
        parts.append(
            f'<rect x="{j * 115}" y="{legend_y - 9}" width="10" height="10" fill="{COLOURS[status]}"/>'
            f'<text x="{j * 115 + 14}" y="{legend_y}" font-size="11">{escape(status)}</text>'
        )
    return "".join(parts) + "</svg>"


def _age_chart(report: Report, now: dt.datetime) -> str:
    h, w, left = 16, 520, 150
    ages = [(e.id, _age_days(e.collected, now)) for e in report.evidence]
    top = max([a for _, a in ages] + [float(report.stale_days)])
    parts = [
        f'<svg role="img" aria-label="Evidence age" width="{left + w + 80}" height="{h * len(ages) + 10}"'
        ' xmlns="http://www.w3.org/2000/svg"><title>Evidence age in days</title>'
    ]
    sx = left + w * report.stale_days / top
    parts.append(
        f'<line x1="{sx:.1f}" x2="{sx:.1f}" y1="0" y2="{h * len(ages)}" stroke="#c62828" stroke-dasharray="4"/>'
    )
    for i, (eid, age) in enumerate(ages):
        colour = "#c62828" if age > report.stale_days else "#1565c0"
        parts.append(
            f'<a href="#{eid}"><text x="0" y="{i * h + 12}" font-size="11">{eid}</text></a>'
            f'<rect x="{left}" y="{i * h + 2}" width="{max(1.0, w * age / top):.1f}" height="{h - 4}" '
            f'fill="{colour}"><title>{eid}: {age:.1f} days</title></rect>'
            f'<text x="{left + w + 4}" y="{i * h + 12}" font-size="11">{age:.1f} d</text>'
        )
    return "".join(parts) + "</svg>"


def _control_rows(items: list[ControlStatus]) -> str:
    rows = "".join(
        f"<tr><td>{_ctl(s.control.id)}</td><td>{escape(s.control.title)}</td><td>{_badge(s.status)}</td></tr>"
        for s in items
    )
    return f"<table><tr><th>control</th><th>title</th><th>status</th></tr>{rows}</table>"


def _principal(req: str) -> int:
    return int(req.split(".")[0])


def _req_key(req: str) -> tuple[int, ...]:
    return tuple(int(p) for p in req.split("."))


def render(report: Report) -> str:
    now = dt.datetime.fromisoformat(report.generated)
    evs = report.evidence_by_id()
    counts = report.counts()
    out: list[str] = [
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f'<meta name="referrer" content="no-referrer"><title>billkit evidence, stack {escape(report.stack)}</title>'
        f"<style>{CSS}</style></head><body>",
        f"<h1>billkit evidence report</h1><p>Stack <b>{escape(report.stack)}</b>, generated {escape(report.generated)}."
        f" Evidence older than {report.stale_days} days is flagged stale.</p>",
        '<nav><a href="#practices">By practice</a><a href="#pci">By PCI DSS requirement</a>'
        '<a href="#controls">By control</a><a href="#hosts">By host</a><a href="#evidence">Evidence</a></nav>',
        "<p>" + " ".join(f"{_badge(s)} {counts[s]}" for s in STATUSES) + "</p>",
    ]
    out += [f'<div class="banner warn">{escape(n)}</div>' for n in report.notes]
    by_practice: dict[int, list[ControlStatus]] = defaultdict(list)
    by_pci: dict[str, list[ControlStatus]] = defaultdict(list)
    for s in report.statuses.values():
        by_practice[s.control.practice].append(s)
        for req in s.control.pci_dss:
            by_pci[req].append(s)

    def tally(items: list[ControlStatus]) -> dict[str, int]:
        c: dict[str, int] = defaultdict(int)
        for s in items:
            c[s.status] += 1
        return c

    out.append('<section id="practices"><h2>By seed practice</h2>')
    out.append(
        _bars(
            "Results per practice",
            [(f"{n} {PRACTICES[n]}", f"practice-{n}", tally(by_practice[n])) for n in PRACTICES if by_practice[n]],
        )
    )
    for n in PRACTICES:
        if by_practice[n]:
            out.append(f'<h3 id="practice-{n}">{n}. {escape(PRACTICES[n])}</h3>{_control_rows(by_practice[n])}')
    out.append("</section>")

    out.append('<section id="pci"><h2>By PCI DSS v4.0 requirement</h2>')
    principal: dict[int, list[str]] = defaultdict(list)
    for req in sorted(by_pci, key=_req_key):
        principal[_principal(req)].append(req)
    out.append(
        _bars(
            "Results per PCI DSS requirement",
            [
                (
                    f"Requirement {p}",
                    f"pci-{p}",
                    tally(list({s.control.id: s for r in principal[p] for s in by_pci[r]}.values())),
                )
                for p in sorted(principal)
            ],
        )
    )
    for p in sorted(principal):
        out.append(f'<h3 id="pci-{p}">Requirement {p}</h3><ul>')
        for req in principal[p]:
            links = ", ".join(f"{_ctl(s.control.id)} {_badge(s.status)}" for s in by_pci[req])
            out.append(f'<li id="pci-{escape(req)}"><b>{escape(req)}</b>: {links}</li>')
        out.append("</ul>")
    out.append("</section>")

    out.append('<section id="controls"><h2>By control</h2>')
    for cid, s in report.statuses.items():
        c = s.control
        refs = ", ".join(
            [*(f"PCI DSS {p}" for p in c.pci_dss), *(f"GDPR {g}" for g in c.gdpr), *(f"HIPAA {h}" for h in c.hipaa)]
        )
        layers = ", ".join(f"{layer}: {outcome}" for layer, outcome in s.layers.items()) or "none (manual)"
        out.append(
            f'<div id="ctl-{escape(cid)}"><h3>{escape(cid)} {_badge(s.status)} {escape(c.title)}</h3>'
            f"<p>Practice {c.practice} ({escape(c.practice_name)}); {escape(refs)}; severity {c.severity};"
            f" layers {escape(layers)}.</p>"
        )
        if s.reasons:
            out.append("<ul>" + "".join(f"<li>{escape(r)}</li>" for r in s.reasons) + "</ul>")
        ev_ids = sorted({r.evidence for r in s.results})
        if ev_ids:
            rows = []
            for eid in ev_ids:
                e, age = evs[eid], _age_days(evs[eid].collected, now)
                mine = [r for r in s.results if r.evidence == eid]
                stale = ' <span class="stale">stale</span>' if age > report.stale_days else ""
                tally_txt = ", ".join(
                    f"{n} {o}"
                    for o, n in sorted(
                        {o: sum(1 for r in mine if r.outcome == o) for o in {r.outcome for r in mine}}.items()
                    )
                )
                rows.append(
                    f'<tr><td><a href="#{eid}">{eid}</a></td><td><a href="{escape(e.path)}">{escape(e.path)}</a>'
                    f"</td><td>{escape(tally_txt)}</td><td>{age:.1f} d{stale}</td></tr>"
                )
            out.append(
                "<table><tr><th>evidence</th><th>file</th><th>results</th><th>age</th></tr>"
                + "".join(rows)
                + "</table>"
            )
        out.append("</div>")
    out.append("</section>")

    out.append('<section id="hosts"><h2>By host</h2>')
    by_host: dict[str, list] = defaultdict(list)
    for r in report.results:
        if r.host:
            by_host[r.host].append(r)
    if not by_host:
        out.append("<p>No host was assessed in this run: the host layer is <b>not assessed</b>.</p>")
    for host in sorted(by_host):
        rows = "".join(
            f"<tr><td>{escape(r.check)}</td><td>{', '.join(_ctl(c) for c in r.controls)}</td>"
            f'<td>{escape(r.outcome)}</td><td><a href="#{r.evidence}">{r.evidence}</a></td></tr>'
            for r in by_host[host]
        )
        out.append(
            f'<h3 id="host-{escape(host)}">{escape(host)}</h3><table><tr><th>check</th><th>controls</th>'
            f"<th>outcome</th><th>evidence</th></tr>{rows}</table>"
        )
    out.append("</section>")

    out.append('<section id="evidence"><h2>Evidence</h2>' + _age_chart(report, now))
    rows = []
    for e in report.evidence:
        age = _age_days(e.collected, now)
        stale = ' <span class="stale">stale</span>' if age > report.stale_days else ""
        rows.append(
            f'<tr id="{e.id}"><td>{e.id}</td><td><a href="{escape(e.path)}">{escape(e.path)}</a><br>'
            f"{escape(e.description)}</td><td>{escape(e.method)}</td><td>{escape(e.tool)} {escape(e.version)}"
            f"</td><td>{escape(e.collected)} ({age:.1f} d){stale}</td><td><code>{e.sha256}</code></td></tr>"
        )
    out.append(
        "<table><tr><th>id</th><th>file</th><th>method</th><th>tool</th><th>collected</th><th>SHA-256</th></tr>"
        + "".join(rows)
        + "</table></section>"
    )
    out.append("<p>Verify this bundle: <code>billkit report verify DIR</code> (signature and every hash).</p>")
    out.append("</body></html>")
    return "".join(out)


def write_html(report: Report, out: Path) -> None:
    (out / "index.html").write_text(render(report), encoding="utf-8")
