"""The health page's HTML, rendered on the server from :func:`.view.health_view`.

The standard library only (string.Template, html.escape): the api image holds no template
engine and a Pi's SD card gains nothing from one. Everything shown comes from Redis, where any
process holding a service's password can write its fleet record: every value goes through
:func:`esc` on its way into a template, and only fragments this module built (:class:`Html`)
are inserted as they are. The page's Content-Security-Policy (:data:`PAGE_HEADERS`, sent with
every page and fragment) forbids inline scripts as a second wall: an escaping mistake would
show text, not run it.

The live part (published version, fleet, queues, history) is one fragment that the page's
script (static/health.js) fetches again every few seconds and swaps in: one renderer, here,
for the first paint and every refresh.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping
from importlib.resources import files
from string import Template
from typing import Any

SHORT_SHA = 12


class Html(str):
    """Markup built by this module: inserted as it is, never escaped again."""

    __slots__ = ()


def esc(value: object) -> Html:
    """Text (anything not :class:`Html`) as HTML, quotes included (safe in attributes)."""
    if isinstance(value, Html):
        return value
    return Html(html.escape("" if value is None else str(value), quote=True))


def fill(template: str, **values: object) -> Html:
    """``template`` with each ``$name`` replaced by its value, escaped unless :class:`Html`."""
    return Html(Template(template).substitute({k: esc(v) for k, v in values.items()}))


def join(parts: Iterable[Html]) -> Html:
    return Html("".join(parts))


PAGE = (files("celery_config_sync.health_page") / "templates" / "health.html").read_text(
    encoding="utf-8")
# The page's own rules: its script and style from the serving app alone, no inline script (an
# escaping mistake shows text, never runs it), no frame, no form posting elsewhere.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "connect-src 'self'; img-src 'self'; form-action 'self'; "
                               "base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def render_page(view: Mapping[str, Any], compared: Mapping[str, Any] | None, *,
                docs: str | None = None) -> Html:
    """The whole page; ``compared``: a diff of two versions (view.version_diff) to show;
    ``docs``: the API docs' address relative to the page (no link when None)."""
    link = fill('<a href="$href">API docs</a>', href=docs) if docs else Html("")
    return fill(PAGE, namespace=view["namespace"], instance=view["this_instance"]["instance"],
                docs=link, live=render_live(view), diff=diff_section(view, compared))


def render_live(view: Mapping[str, Any]) -> Html:
    """The fragment the page refreshes: summary, published version, fleet, queues, history."""
    return join([summary(view), published(view), fleet(view), queues(view), history(view)])


def summary(view: Mapping[str, Any]) -> Html:
    failing = [r for r in view["fleet"] if r.get("problems")]
    unconsumed = view.get("unconsumed_queues") or []
    if view["error"]:
        state, text = "bad", view["error"]
    elif (view["published"] or {}).get("published_error"):
        state, text = "bad", f"published content is invalid: {view['published']['published_error']}"
    elif not view["fleet"]:
        state, text = "warn", "no running instance reports to this namespace"
    elif failing:
        state, text = "bad", f"{len(failing)} of {len(view['fleet'])} instances need attention"
    else:
        state, text = "ok", f"all {len(view['fleet'])} instances run the published version"
    if unconsumed and not view["error"]:
        more = (f" and {len(unconsumed) - SENDERS_SHOWN} more"
                if len(unconsumed) > SENDERS_SHOWN else "")
        state, text = "bad", (f"{text}; no live worker consumes "
                              f"{', '.join(unconsumed[:SENDERS_SHOWN])}{more}, where tasks are "
                              "sent: they pile up")
    return fill('<p id="summary" class="summary $state">$text</p>', state=state, text=text)


def published(view: Mapping[str, Any]) -> Html:
    report = view["published"]
    if report is None:
        return Html('<section id="published"><h2>Published</h2><p>nothing readable</p>'
                    '</section>')
    rows = [("version", report["version"]), ("sha256", report["sha256"]),
            ("published at", report["published_at"]), ("publisher", report["publisher"]),
            ("source", report["source"]), ("change", report["change"]["kind"]),
            ("restart required by", ", ".join(report["change"]["restart_required"]) or "-")]
    body = join(fill('<tr><th scope="row">$name</th><td>$value</td></tr>', name=n, value=v)
                for n, v in rows)
    return fill('<section id="published"><h2>Published: version <span id="published-version">'
                '$version</span></h2><table class="facts">$body</table></section>',
                version=report["version"], body=body)


FLEET_ROW = ('<tr class="$css" data-service="$service" data-instance="$instance">'
             '<td>$service</td><td><code>$instance</code></td><td class="num">$version</td>'
             '<td><code class="sha" title="$sha">$short</code></td><td>$source</td>'
             '<td class="num">$beat</td>'
             '<td>$restart</td><td>$error</td><td>$state</td></tr>')


def fleet(view: Mapping[str, Any]) -> Html:
    rows = []
    for record in view["fleet"]:
        found = record.get("problems") or []
        css = ("drift " if any(p.startswith("drift") for p in found) else "") + (
            "problem" if found else "ok")
        beat = record.get("heartbeat_age")
        rows.append(fill(FLEET_ROW, css=css, service=record.get("service"),
                         instance=record.get("instance"), version=record.get("version"),
                         sha=record.get("sha256"), short=str(record.get("sha256", ""))[:SHORT_SHA],
                         source=record.get("source"),
                         beat="-" if beat is None else f"{beat:g} s",
                         restart=record.get("restart_required") or "-",
                         error=record.get("last_error") or "-",
                         state=join(fill("<div>$p</div>", p=p) for p in found) if found
                         else "in sync"))
    body = join(rows) if rows else Html('<tr><td colspan="9">no instance reports</td></tr>')
    return fill('<section id="fleet"><h2>Fleet</h2><table><thead><tr><th>service</th>'
                '<th>instance</th><th>version</th><th>sha256</th><th>source</th>'
                '<th>heartbeat</th><th>restart required</th><th>last error</th><th>state</th>'
                '</tr></thead><tbody>$body</tbody></table></section>', body=body)


QUEUE_ROW = ('<tr class="$css" data-queue="$name"><td>$name</td><td class="num">$depth</td>'
             '<td class="num">$consumers</td><td>$senders</td><td>$state</td></tr>')
# A queue's state (queue_coverage.QueueCoverage.state) -> its row's class: red when routed and
# consumed by no live worker; None: the fleet could not be read.
QUEUE_CSS = {"no consumer": "unconsumed", "unknown": "problem", "consumed": "ok",
             "not routed": "ok", None: "ok"}
SENDERS_SHOWN = 3


def queues(view: Mapping[str, Any]) -> Html:
    rows = []
    for q in view["queues"]:
        senders = q.get("senders") or []
        more = f" and {len(senders) - SENDERS_SHOWN} more" if len(senders) > SENDERS_SHOWN else ""
        consumers = q.get("consumers")
        rows.append(fill(QUEUE_ROW, css=QUEUE_CSS.get(q.get("state"), "ok"), name=q["name"],
                         depth="?" if q["depth"] is None else q["depth"],
                         consumers="?" if consumers is None else
                         f"{consumers}" + (f" (+{q['unknown']} unknown)" if q["unknown"] else ""),
                         senders=", ".join(senders[:SENDERS_SHOWN]) + more or "-",
                         state=q.get("state") or "?"))
    return fill('<section id="queues"><h2>Queues</h2><table class="narrow"><thead><tr>'
                '<th>queue</th><th>messages waiting</th><th>live consumers</th><th>sent to by</th>'
                '<th>state</th></tr></thead><tbody>$rows</tbody></table></section>',
                rows=join(rows))


def value_text(value: Any) -> str:
    """A configuration value as the JSON it is stored as (compact, keys sorted)."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


HISTORY_ROW = ('<tr data-version="$version"><td class="num">$version</td>'
               '<td><code class="sha" title="$sha">$short</code></td><td>$at</td>'
               '<td>$publisher</td><td>$source</td><td>$change</td><td>$summary</td><td>$link</td></tr>')


def history(view: Mapping[str, Any]) -> Html:
    entries = view["history"]
    held = {entry["version"] for entry in entries}
    rows = join(fill(HISTORY_ROW, version=e["version"], sha=e["sha256"],
                     short=e["sha256"][:SHORT_SHA], at=e["published_at"],
                     publisher=e["publisher"], source=e["source"], change=e["change"],
                     summary=e["summary"],
                     link=fill('<a href="health?from=$old&amp;to=$new#diff">diff with $old</a>',
                               old=e["version"] - 1, new=e["version"])
                     if e["version"] - 1 in held else "-")
                for e in entries)
    note = fill('<p class="summary bad">history unreadable: $error</p>',
                error=view["history_error"]) if view["history_error"] else Html("")
    return fill('<section id="history"><h2>History</h2>$note<table><thead><tr><th>version</th>'
                '<th>sha256</th><th>published at</th><th>publisher</th><th>source</th>'
                '<th>change</th><th>what changed</th><th></th></tr></thead><tbody>$rows</tbody>'
                '</table></section>', note=note,
                rows=rows or Html('<tr><td colspan="8">no version kept</td></tr>'))


DIFF_ROW = ('<tr class="diff-$kind"><td>$sign</td><td>$section</td>'
            '<td><code class="key">$key</code></td><td><code>$old</code></td>'
            '<td><code>$new</code></td><td>$applies</td></tr>')
SIGNS = {"added": "+", "removed": "-", "changed": "~"}


def diff_section(view: Mapping[str, Any], compared: Mapping[str, Any] | None) -> Html:
    """A form to pick any two kept versions (a plain GET: it works without JavaScript), and
    the changes between the two asked for."""
    versions = [entry["version"] for entry in view["history"]]
    old = compared["from"] if compared else (versions[1] if len(versions) > 1 else None)
    new = compared["to"] if compared else (versions[0] if versions else None)

    def options(selected: int | None) -> Html:
        return join(fill('<option value="$v"$sel>version $v</option>', v=v,
                         sel=Html(" selected") if v == selected else Html(""))
                    for v in versions)

    form = fill('<form class="diff" method="get" action="health#diff">'
                '<label>from <select name="from">$old</select></label>'
                '<label>to <select name="to">$new</select></label>'
                '<button type="submit">Compare</button></form>',
                old=options(old), new=options(new))
    return fill('<section id="diff"><h2>Compare two versions</h2>$form$result</section>',
                form=form, result=diff_result(compared) if compared else Html(""))


def diff_result(compared: Mapping[str, Any]) -> Html:
    if compared["error"]:
        return fill('<p id="diff-result" class="summary bad">$error</p>',
                    error=compared["error"])
    if not compared["changes"]:
        return fill('<p id="diff-result" class="summary ok">version $old and version $new '
                    'hold the same configuration</p>', old=compared["from"], new=compared["to"])
    rows = join(fill(DIFF_ROW, kind=c["kind"], sign=SIGNS[c["kind"]], section=c["section"],
                     key=c["key"],
                     old="" if c["kind"] == "added" else value_text(c["from"]),
                     new="" if c["kind"] == "removed" else value_text(c["to"]),
                     applies=c["applies"])
                for c in compared["changes"])
    return fill('<div id="diff-result"><p>From version $old to version $new: $count '
                'change(s), $kind.</p><table><thead><tr><th></th><th>section</th><th>key</th>'
                '<th>version $old</th><th>version $new</th><th>applies</th></tr></thead>'
                '<tbody>$rows</tbody></table></div>', old=compared["from"],
                new=compared["to"], count=len(compared["changes"]), kind=compared["kind"],
                rows=rows)
