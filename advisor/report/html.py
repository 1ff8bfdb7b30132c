"""The nightly report as one self-contained HTML file: inline CSS, inline SVG, no script, no URL.

It renders the report document (advisor/report/nightly.py), which holds only masked
SQL and a database label; every string from it goes through ``html.escape``.
"""

from __future__ import annotations

from html import escape
from string import Template
from typing import Any

from advisor.report.words import regression_text
from advisor.words import plural

SECTIONS = ("summary", "top-queries", "events", "findings", "n-plus-one", "indexes", "hygiene", "bench", "history", "unanalysed")
N_PLUS_ONE = ("ADV101", "ADV102")
HYGIENE_PREFIX = "ADV2"

_PAGE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>advisor report: $database</title>
<style>
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2430; margin: 0; background: #f6f7f9; }
main { max-width: 1180px; margin: 0 auto; padding: 24px; }
header h1 { font-size: 22px; margin: 0 0 4px; }
.meta { color: #5b6575; }
section { background: #fff; border: 1px solid #dde1e7; border-radius: 8px; padding: 16px 20px; margin: 16px 0; }
h2 { font-size: 17px; margin: 0 0 10px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #eceef2; vertical-align: top; }
th { font-weight: 600; color: #5b6575; }
td.num, th.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
code, pre { font: 12px/1.4 ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; }
pre { background: #f3f4f7; padding: 8px; border-radius: 4px; white-space: pre-wrap; word-break: break-word; margin: 4px 0; }
.sev { display: inline-block; padding: 0 6px; border-radius: 4px; font-size: 12px; font-weight: 600; }
.sev-high { background: #fde2e1; color: #a21b16; } .sev-medium { background: #fff0d5; color: #8a5300; }
.sev-low { background: #e4effd; color: #1b4f9c; } .sev-info { background: #eceef2; color: #3c4452; }
.tiles { display: flex; flex-wrap: wrap; gap: 12px; margin-bottom: 12px; }
.tile { border: 1px solid #dde1e7; border-radius: 6px; padding: 8px 12px; min-width: 150px; }
.tile b { display: block; font-size: 20px; }
.alert { background: #fde2e1; border: 1px solid #f2b8b5; padding: 8px 12px; border-radius: 6px; font-weight: 600; }
.finding { border-top: 1px solid #eceef2; padding: 10px 0; }
.muted { color: #5b6575; }
svg text { font: 11px system-ui, sans-serif; fill: #3c4452; }
</style>
</head>
<body>
<main>
<header>
<h1>advisor report: $database</h1>
<div class="meta">$meta</div>
</header>
$sections
</main>
</body>
</html>
""")


def e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:,.1f}"


def _section(ident: str, title: str, body: str) -> str:
    return f'<section id="{ident}">\n<h2>{e(title)}</h2>\n{body}\n</section>'


def _sev(severity: str) -> str:
    return f'<span class="sev sev-{e(severity)}">{e(severity)}</span>'


def _table(head: list[str], rows: list[list[str]], numeric: set[int] | frozenset[int] = frozenset()) -> str:
    if not rows:
        return '<p class="muted">None.</p>'
    th = "".join(f'<th class="num">{h}</th>' if i in numeric else f"<th>{h}</th>" for i, h in enumerate(head))
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


# --- charts (inline SVG) ---------------------------------------------------------------------


def bar_chart(items: list[tuple[str, float]], unit: str, width: int = 720, bar: int = 18) -> str:
    if not items:
        return ""
    top = max(v for _, v in items) or 1.0
    label_w, value_w = 70, 110
    span = width - label_w - value_w
    height = len(items) * (bar + 6) + 4
    parts = [f'<svg role="img" aria-label="{e(unit)}" width="{width}" height="{height}" viewBox="0 0 {width} {height}">']
    for i, (label, value) in enumerate(items):
        y = 2 + i * (bar + 6)
        w = max(1.0, span * value / top)
        parts.append(f'<text x="0" y="{y + bar - 5}">{e(label)}</text>'
                     f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar}" rx="2" fill="#4f7cc4"></rect>'
                     f'<text x="{label_w + w + 6:.1f}" y="{y + bar - 5}">{value:,.1f} {e(unit)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def sparkline(values: list[float], width: int = 120, height: int = 24) -> str:
    if not values:
        return ""
    if len(values) == 1:
        values = values * 2
    lo, hi = min(values), max(values)
    rng = (hi - lo) or 1.0
    step = (width - 4) / (len(values) - 1)
    pts = " ".join(f"{2 + i * step:.1f},{height - 2 - (v - lo) / rng * (height - 4):.1f}" for i, v in enumerate(values))
    last = pts.rsplit(" ", 1)[-1].split(",")
    return (f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="trend">'
            f'<polyline fill="none" stroke="#4f7cc4" stroke-width="1.5" points="{pts}"></polyline>'
            f'<circle cx="{last[0]}" cy="{last[1]}" r="2" fill="#a21b16"></circle></svg>')


def column_chart(values: list[float], label: str, names: list[str] | None = None, width: int = 260, height: int = 56) -> str:
    """One column per time bucket, scaled to the largest, each named in its tooltip (``names``);
    the label above them."""
    if not values:
        return ""
    top = max(values) or 1.0
    plot = height - 16
    step = min((width - 4) / len(values), 18.0)  # a few buckets stay columns, not slabs
    bar = max(1.0, step - 1)
    parts = [f'<svg class="timeline" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{e(label)}">',
             f'<text x="2" y="11">{e(label)}</text>',
             f'<line x1="2" y1="{height - 1}" x2="{width - 2}" y2="{height - 1}" stroke="#dde1e7"></line>']
    for i, v in enumerate(values):
        h = plot * v / top
        if v > 0:
            tip = f"<title>{e(names[i])}: {v:,.0f}</title>" if names else ""
            parts.append(f'<rect x="{2 + i * step:.1f}" y="{height - 1 - max(h, 1.0):.1f}" width="{bar:.1f}" '
                         f'height="{max(h, 1.0):.1f}" fill="#4f7cc4">{tip}</rect>')
    parts.append("</svg>")
    return "".join(parts)


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return ""


# --- sections -------------------------------------------------------------------------------------


def _summary(doc: dict) -> str:
    s, run = doc["summary"], doc["run"]
    sav = s["estimated_savings"]
    window = run["window"]
    alerts = "".join(f'<p class="alert">{e(u["reason"])}</p>' for u in doc["unanalysed"] if u["what"] == "database")
    alerts += "".join(f'<p class="alert">Warning: {e(note)}</p>' for note in s.get("warnings", []))
    tiles = [
        ("statements", f"{s['statements']:,}"), ("distinct queries", f"{s['queries']:,}"),
        ("findings", f"{s['findings']:,}"), ("regressions", f"{s['regressions']:,}"),
        ("saved by the indexes (est.)", f"{sav['index_ms']:,.0f} ms"),
        ("findings' impact (upper bound)", f"{sav['findings_impact_ms']:,.0f} ms"),
    ]
    tile_html = '<div class="tiles">' + "".join(f'<div class="tile"><b>{v}</b>{e(k)}</div>' for k, v in tiles) + "</div>"
    top = _table(["severity", "code", "finding", "impact ms"],
                 [[_sev(f["severity"]), e(f["code"]), e(f["title"]), _ms(f["impact_ms"])] for f in s["top_findings"]], {3})
    return _section("summary", "Summary", alerts + tile_html +
                    f'<p>Time window: {e(window["first_seen"] or "?")} → {e(window["last_seen"] or "?")}; '
                    f'workload total {sav["workload_total_ms"]:,.1f} ms. The recommended indexes would save about '
                    f'{sav["index_ms"]:,.1f} ms of it (each helped query\'s time scaled by its planner-cost reduction).</p>'
                    f"<h3>Top findings</h3>{top}")


def _query_events(events: dict) -> dict[str, list[str]]:
    """fingerprint → what the server logged about the query: temp files, lock waits, errors by SQLSTATE."""
    said: dict[str, list[str]] = {}
    for t in events.get("temp_files", {}).get("by_query", []):
        said.setdefault(t["fingerprint"], []).append(f"{plural(t['count'], 'temp file')}, {_size(t['bytes'])}")
    for w in events.get("lock_waits", {}).get("by_query", []):
        if w["count"]:
            said.setdefault(w["fingerprint"], []).append(f"{plural(w['count'], 'lock wait')} (max {_ms(w['max_wait_ms'])} ms)")
    for x in events.get("errors", {}).get("by_query", []):
        said.setdefault(x["fingerprint"], []).append(f"{plural(x['count'], 'error')} {x['sqlstate']}")
    return said


def _top_queries(doc: dict) -> str:
    queries = doc["workload"]["queries"][:10]
    trends = {t["fingerprint"]: t["points"] for t in doc["history"].get("trend", [])}
    said = _query_events(doc["workload"].get("events") or {})
    chart = bar_chart([(f"#{i}", q["total_ms"]) for i, q in enumerate(queries, 1)], "ms")
    rows = []
    for i, q in enumerate(queries, 1):
        points = trends.get(q["fingerprint"], [])
        rows.append([str(i), f"{q['calls']:,}", _ms(q["total_ms"]), _ms(q["p95_ms"]),
                     sparkline([p["total_ms"] for p in points]) + (f'<br><span class="muted">{len(points)} runs</span>' if points else ""),
                     "<br>".join(e(x) for x in said.get(q["fingerprint"], [])) or '<span class="muted">–</span>',
                     f"<code>{e(q['normalized'][:400])}</code>"])
    return _section("top-queries", "Top queries by total time",
                    chart + _table(["#", "calls", "total ms", "p95 ms", "trend (total ms)", "server events", "query"], rows, {0, 1, 2, 3}))


_TIMELINE = (("temp_bytes", "temp bytes", _size), ("lock_waits", "lock waits", lambda n: f"{n:,}"),
             ("errors", "errors", lambda n: f"{n:,}"), ("sessions", "sessions", lambda n: f"{n:,}"))


def _events(doc: dict) -> str:
    t = (doc["workload"].get("events") or {}).get("timeline") or {}
    buckets = t.get("buckets") or []
    if not buckets:
        return _section("events", "Server events over time", '<p class="muted">The logs read show no server events with a time.</p>')
    charts, names = [], [b["start"] for b in buckets]
    for key, title, fmt in _TIMELINE:
        values = [b[key] for b in buckets]
        charts.append(column_chart(values, f"{title}: {fmt(sum(values))}", names))
    outside = t.get("outside") or {}
    note = ("" if not any(outside.values()) else
            '<p class="muted">Not charted (a timestamp without a date, or older than a month of hours): '
            + e(", ".join(f"{title} {fmt(outside[key])}" for key, title, fmt in _TIMELINE if outside.get(key))) + ".</p>")
    return _section("events", "Server events over time",
                    f'<p>Per {e(t["unit"])}, {e(" → ".join(dict.fromkeys((names[0], names[-1]))))} (the log\'s clock).</p>'
                    f'<div class="tiles">{"".join(charts)}</div>' + note)


def _finding(f: dict) -> str:
    ev = f.get("evidence") or {}
    plan = [(k, v) for k, v in ev.items() if k.endswith(("plan", "excerpt")) and v]
    plain = [(k, v) for k, v in ev.items() if (k, v) not in plan and not isinstance(v, (dict, list))]
    ev_html = ", ".join(f"{e(k)}: <code>{e(v)}</code>" for k, v in plain[:12])
    plan_html = "".join(f'<div class="muted">{e(k)}</div><pre>{e(v if isinstance(v, str) else chr(10).join(map(str, v)))}</pre>' for k, v in plan)
    return (f'<div class="finding">{_sev(f["severity"])} <b>{e(f["code"])}</b> {e(f["title"])}'
            f' <span class="muted">impact {_ms(f["impact_ms"])} ms</span>'
            + (f'<pre>{e(f["normalized"])}</pre>' if f.get("normalized") else "")
            + (f"<div>Evidence: {ev_html}</div>" if ev_html else "") + plan_html
            + f'<div>Fix:</div><pre>{e(f["suggestion"])}</pre></div>')


def _findings(doc: dict) -> str:
    findings = [f for f in (doc.get("scan") or {}).get("findings", [])
                if f["code"] not in N_PLUS_ONE and not f["code"].startswith(HYGIENE_PREFIX)]
    body = "".join(_finding(f) for f in findings) or '<p class="muted">No plan or pattern findings.</p>'
    return _section("findings", "Findings, by estimated impact", body)


def _n_plus_one(doc: dict) -> str:
    rows = []
    for f in (doc.get("scan") or {}).get("findings", []):
        if f["code"] in N_PLUS_ONE:
            ev = f.get("evidence") or {}
            rows.append([_sev(f["severity"]), e(f["code"]), f"<code>{e(ev.get('parent') or '–')}</code>",
                         f"<code>{e(f.get('normalized'))}</code>", e(ev.get("occurrences")), e(ev.get("statements")),
                         _ms(f["impact_ms"]), f"<pre>{e(f['suggestion'])}</pre>"])
    return _section("n-plus-one", "N+1 patterns",
                    _table(["severity", "code", "parent", "child (repeated)", "units", "statements", "impact ms", "fix"], rows, {4, 5, 6}))


def _indexes(doc: dict) -> str:
    adv = doc.get("indexes")
    if adv is None:
        return _section("indexes", "Index recommendations", f'<p class="muted">Not run: {e(doc.get("indexes_reason") or "no advice")}</p>')
    rows = []
    for r in adv["recommendations"]:
        before = sum(q["cost_before"] * q["weight"] for q in r["queries"])
        after = sum(q["cost_after"] * q["weight"] for q in r["queries"])
        size = r["estimated_size_bytes"]
        rows.append([f"<pre>{e(r['ddl'])}</pre>", e(r["table"]), "–" if size is None else f"{size / 1048576:,.1f} MB",
                     str(len(r["queries"])), f"{before:,.0f} → {after:,.0f}", e(r["validated"])])
    head = (f"<p>Workload planner cost {adv['workload_cost_before']:,.0f} → {adv['workload_cost_after']:,.0f} "
            f"({e(adv['validation'])}).</p>")
    notes = "".join(f'<p class="muted">{e(n)}</p>' for n in adv.get("notes", []))
    return _section("indexes", "Index recommendations",
                    head + _table(["DDL", "table", "size (est.)", "queries", "weighted cost before → after", "validated"], rows, {2, 3}) + notes)


def _hygiene(doc: dict) -> str:
    rows = [[e(i["kind"]), e(i["table"]), e(i["reason"]), f"<pre>{e(i['suggestion'])}</pre>"]
            for i in (doc.get("indexes") or {}).get("existing_index_findings", [])]
    rows += [[e(f["code"]), e(", ".join(f.get("tables") or [])), e(f["title"]), f"<pre>{e(f['suggestion'])}</pre>"]
             for f in (doc.get("scan") or {}).get("findings", []) if f["code"].startswith(HYGIENE_PREFIX)]
    return _section("hygiene", "Index hygiene", _table(["kind", "table", "why", "fix"], rows))


def _bench(doc: dict) -> str:
    b = doc.get("bench")
    if not b:
        return _section("bench", "Connection pool benchmark", '<p class="muted">Not run (pass --bench).</p>')
    arms = b.get("arms", [])
    chart = bar_chart([(f"{a['mode'][:3]}·{a['concurrency']}", a["ops_per_s"]) for a in arms], "ops/s")
    rows = [[e(a["mode"]), e(a["transport"]), str(a["concurrency"]), f"{a['ops_per_s']:,.0f}", _ms(a["p95_ms"]),
             str(a["errors"])] for a in arms]
    verdict = (b.get("verdict") or {}).get("summary")
    return _section("bench", "Connection pool benchmark",
                    chart + _table(["mode", "transport", "clients", "ops/s", "p95 ms", "errors"], rows, {2, 3, 4, 5})
                    + (f"<p>{e(verdict)}</p>" if verdict else ""))


def _history(doc: dict) -> str:
    h = doc["history"]
    if not h.get("previous_run"):
        intro = '<p class="muted">First run for this database: nothing to compare with yet.</p>'
    else:
        intro = (f"<p>Compared with the run of {e(h['previous_run'])}; a regression is p95 or total time up more than "
                 f"{h['threshold_pct']:g} %, with enough calls on both sides, above an absolute floor and beyond the "
                 f"query's run-to-run spread in history.</p>")
    new = _table(["severity", "code", "finding"], [[_sev(f["severity"]), e(f["code"]), e(f["title"])] for f in h["new_findings"]])
    gone = _table(["severity", "code", "finding"], [[_sev(f["severity"]), e(f["code"]), e(f["title"])] for f in h["resolved_findings"]])
    reg = _table(["query", "regressed", "total ms", "p95 ms"],
                 [[f"<code>{e(g['normalized'][:300])}</code>", e(regression_text(g)),
                   f"{_ms(g['total_ms_before'])} → {_ms(g['total_ms_after'])}", f"{_ms(g['p95_ms_before'])} → {_ms(g['p95_ms_after'])}"]
                  for g in h["regressions"]], {2, 3})
    kinds = h.get("new_error_kinds") or []
    errors = ("" if not kinds else "<h3>New error kinds</h3>" + _table(
        ["SQLSTATE", "errors", "query"],
        [[e(k["sqlstate"]), f"{k['count']:,}", f"<code>{e(k['normalized'][:300])}</code>" if k["fingerprint"] else "(all queries)"]
         for k in kinds], {1}))
    return _section("history", "History",
                    intro + f"<h3>Regressions</h3>{reg}{errors}<h3>New findings</h3>{new}<h3>Resolved findings</h3>{gone}")


def _unanalysed(doc: dict) -> str:
    rows = [[e(u["what"]), e(u["reason"])] for u in doc["unanalysed"]]
    return _section("unanalysed", "Not analysed", _table(["what", "why"], rows))


def report_html(doc: dict) -> str:
    run = doc["run"]
    meta = (f"{e(run['started_at'])} · advisor {e(run['tool']['version'])} · server {e(run['server_version_num'] or 'unknown')}"
            f" · sources: {e('; '.join(run['sources']) or 'none')}")
    sections = [_summary(doc), _top_queries(doc), _events(doc), _findings(doc), _n_plus_one(doc), _indexes(doc), _hygiene(doc),
                _bench(doc), _history(doc), _unanalysed(doc)]
    return _PAGE.substitute(database=e(run["database"]), meta=meta, sections="\n".join(sections))


__all__ = ["SECTIONS", "bar_chart", "column_chart", "report_html", "sparkline"]
