"""The dashboard's pages as HTML, rendered on the server from the same models the API answers
(so a page's figures are the API's). Plain HTML: real links, buttons and labelled form
fields; every value escaped. Figures carry `data-figure` attributes naming them, which the
browser test reads."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from html import escape
from urllib.parse import quote, urlencode

from services.gateway.dashboard.charts import Line, bar_chart, line_chart
from services.gateway.directory import query as dq
from services.gateway.directory.models import (
    Leaderboards,
    MemberPage,
    MemberProfile,
    MemberRow,
    Operations,
    Series,
)
from services.gateway.flywheel.models import FlywheelReport

NAV = (
    ("/dashboard", "Overview"),
    ("/dashboard/members", "Members"),
    ("/dashboard/leaderboards", "Leaderboards"),
)


def e(value: object) -> str:
    return escape("" if value is None else str(value))


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def day(value: datetime | date | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d")


def layout(title: str, body: str, *, current: str = "", signed_in: bool = True) -> str:
    nav = ""
    if signed_in:
        current_attr = ' aria-current="page"'
        links = "".join(
            f'<li><a href="{href}"{current_attr if href == current else ""}>{label}</a></li>'
            for href, label in NAV
        )
        nav = (
            f'<nav aria-label="Dashboard"><ul>{links}</ul>'
            '<form method="post" action="/dashboard/logout" class="logout">'
            '<button type="submit">Sign out</button></form></nav>'
        )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)} · flywheel</title>"
        '<link rel="stylesheet" href="/dashboard/static/dashboard.css">'
        '<link rel="icon" href="/dashboard/static/favicon.svg" type="image/svg+xml">'
        '<script src="/dashboard/static/dashboard.js" defer></script></head><body>'
        '<a class="skip" href="#main">Skip to content</a>'
        f'<header><span class="brand">flywheel</span>{nav}</header>'
        f'<main id="main"><h1>{e(title)}</h1>{body}</main></body></html>'
    )


def login_page(error: str | None, next_url: str) -> str:
    message = f'<p class="error" role="alert">{e(error)}</p>' if error else ""
    body = (
        f'{message}<form method="post" action="/dashboard/login" class="login">'
        f'<input type="hidden" name="next" value="{e(next_url)}">'
        '<label for="key">API key (with the <code>read</code> scope)</label>'
        '<input id="key" name="key" type="password" autocomplete="current-password" required '
        "autofocus>"
        '<button type="submit">Sign in</button></form>'
        "<p>The key is checked once and traded for a session cookie; it is not stored in "
        "the browser.</p>"
    )
    return layout("Sign in", body, signed_in=False)


def empty_state(what: str) -> str:
    return (
        f'<p class="empty" data-empty="true">{e(what)} Nothing has arrived yet: post '
        "activities to <code>POST /v1/activities</code> or connect a platform webhook, and "
        "this fills in as the stage services judge them.</p>"
    )


def _window_form(action: str, start: date | None, end: date | None) -> str:
    return (
        f'<form method="get" action="{action}" class="window">'
        "<fieldset><legend>Window (event time, UTC)</legend>"
        f'<label for="from">From</label><input id="from" name="from" type="date" '
        f'value="{day(start)}">'
        f'<label for="to">To (exclusive)</label><input id="to" name="to" type="date" '
        f'value="{day(end)}">'
        '<button type="submit">Show</button></fieldset></form>'
    )


def ops_strip(ops: Operations) -> str:
    def figure(name: str, label: str, value: object, fallback: str = "unknown") -> str:
        shown = fallback if value is None else value
        return (
            f'<li><span class="label">{e(label)}</span> '
            f'<strong data-figure="{name}">{e(shown)}</strong></li>'
        )

    note = (
        f'<li class="warn">broker did not answer: {e(ops.broker_error)}</li>'
        if ops.broker_error
        else ""
    )
    return (
        '<section class="ops" aria-label="Operations"><h2>Operations</h2><ul>'
        + figure("ops:consumer_lag", "consumer lag (records)", ops.consumer_lag)
        + figure("ops:dead_letters", "dead letters", ops.dead_letters)
        + figure("ops:outbox_backlog", "outbox backlog", ops.outbox_backlog)
        + figure(
            "ops:watermark",
            "newest event",
            ops.watermark.isoformat()[:16] + "Z" if ops.watermark else None,
            "not started",
        )
        + note
        + "</ul></section>"
    )


FUNNEL = (
    ("awareness", "visitor"),
    ("awareness", "member"),
    ("awareness", "customer"),
    ("engagement", "engaged"),
    ("advocacy", "advocate"),
    ("advocacy", "champion"),
)


def overview_page(
    report: FlywheelReport,
    series: Series,
    ops: Operations,
    start: date | None,
    end: date | None,
) -> str:
    h = series.health
    tiles = [
        ("members", "Members", h.members, None, None),
        ("active_share", "Active in the last 30 days", h.active_30d, h.active_share, h.members),
        ("customer_share", "Customers", h.customers, h.customer_share, h.members),
        ("advocate_share", "Advocates and champions", h.advocates, h.advocate_share, h.members),
        (
            "referral_share",
            "New members through a referral",
            report.new_members_via_referral,
            report.referral_share,
            report.new_members,
        ),
        (
            "peer_answer_share",
            "Questions answered by peers",
            report.questions_answered_by_peers,
            report.peer_answer_share,
            report.questions,
        ),
    ]
    tile_html = "".join(
        f'<li class="tile"><span class="label">{e(label)}</span>'
        + (
            f'<strong data-figure="health:{name}" data-value="{"" if ratio is None else ratio}">'
            f"{pct(ratio)}</strong>"
            f'<span class="raw" data-figure="count:{name}">{count} of {whole}</span>'
            if whole is not None
            else f'<strong data-figure="count:{name}">{count}</strong>'
        )
        + "</li>"
        for name, label, count, ratio, whole in tiles
    )
    body = [_window_form("/dashboard", start, end), ops_strip(ops)]
    body.append(
        f'<section aria-label="Health"><h2>Health</h2><ul class="tiles">{tile_html}</ul>'
        f'<p class="note">Event time: now is {e(day(h.now)) or "-"} '
        "(the newest activity).</p></section>"
    )
    if h.members == 0 and h.visitors == 0:
        body.append(empty_state("No members yet."))
        return layout("Overview", "".join(body), current="/dashboard")

    entered = report.entered_per_stage
    bars = [(f"{stage}", entered.get(dim, {}).get(stage, 0)) for dim, stage in FUNNEL]
    body.append(
        '<section aria-labelledby="funnel-h"><h2 id="funnel-h">Funnel: members who entered '
        "each stage in the window</h2>"
        + bar_chart(title="Members entering each stage", bars=bars, unit="members", ident="funnel")
        + '<table class="data"><caption>Conversion between stages</caption><thead><tr>'
        '<th scope="col">from</th><th scope="col">to</th><th scope="col">entered</th>'
        '<th scope="col">converted</th><th scope="col">rate</th></tr></thead><tbody>'
        + "".join(
            f"<tr><td>{e(c.from_stage)}</td><td>{e(c.to_stage)}</td>"
            f'<td data-figure="conversion:{e(c.from_stage)}-{e(c.to_stage)}:entered">'
            f"{c.entered}</td>"
            f'<td data-figure="conversion:{e(c.from_stage)}-{e(c.to_stage)}:converted">'
            f"{c.converted}</td>"
            f'<td data-figure="conversion:{e(c.from_stage)}-{e(c.to_stage)}:rate" '
            f'data-value="{"" if c.rate is None else c.rate}">{pct(c.rate)}</td></tr>'
            for c in report.conversions
        )
        + "</tbody></table></section>"
    )

    weeks = sorted({w.week for w in series.stage_weeks})
    labels = [w.strftime("%m-%d") for w in weeks]
    flows = []
    for dimension in ("awareness", "engagement", "advocacy"):
        stages = dq.STAGES[dimension]
        counts = {
            (w.week, w.stage): w.transitions for w in series.stage_weeks if w.dimension == dimension
        }
        lines = [Line(s, [float(counts.get((w, s), 0)) for w in weeks]) for s in stages]
        flows.append(
            f"<figure><figcaption>{e(dimension)}</figcaption>"
            + line_chart(
                title=f"Weekly transitions into each {dimension} stage",
                x_labels=labels,
                lines=lines,
                x_title="week starting (month-day, UTC)",
                y_title="transitions per week",
                ident=f"flow-{dimension}",
            )
            + "</figure>"
        )
    body.append(
        '<section aria-labelledby="flows-h"><h2 id="flows-h">Stage flows: transitions per '
        "week</h2>"
        + ("".join(flows) if weeks else empty_state("No transitions in this window."))
        + "</section>"
    )

    points = [("1", 1), ("2", 2), ("4", 4), ("8", 8), ("12", 12)]
    cohorts = series.cohort_retention
    retention_lines = [
        Line(
            f"{c.cohort} ({c.members})",
            [None if c.retained[k] is None else c.retained[k] * 100 for k, _ in points],  # type: ignore[operator]
        )
        for c in cohorts
    ]
    table = (
        '<table class="data"><caption>Share of each sign-up month still active</caption>'
        '<thead><tr><th scope="col">cohort</th><th scope="col">members</th>'
        + "".join(f'<th scope="col">week {k}</th>' for k, _ in points)
        + "</tr></thead><tbody>"
        + "".join(
            f'<tr><th scope="row">{e(c.cohort)}</th><td>{c.members}</td>'
            + "".join(
                f'<td data-figure="retention:{e(c.cohort)}:{k}" '
                f'data-value="{"" if c.retained[k] is None else c.retained[k]}">'
                f"{pct(c.retained[k])}</td>"
                for k, _ in points
            )
            + "</tr>"
            for c in cohorts
        )
        + "</tbody></table>"
    )
    body.append(
        '<section aria-labelledby="retention-h"><h2 id="retention-h">Cohort retention by '
        "sign-up month</h2>"
        + (
            line_chart(
                title="Share of each cohort still active after N weeks",
                x_labels=[f"{k} wk" for k, _ in points],
                lines=retention_lines,
                x_title="weeks after joining",
                y_title="still active (%)",
                unit="%",
                y_max=100,
                ident="retention",
            )
            + table
            if cohorts
            else empty_state("No cohorts yet.")
        )
        + "</section>"
    )

    answer_weeks = series.peer_answer_weeks
    body.append(
        '<section aria-labelledby="peer-h"><h2 id="peer-h">Peer-answer share per week</h2>'
        + (
            line_chart(
                title="Share of the week's questions answered by a peer",
                x_labels=[w.week.strftime("%m-%d") for w in answer_weeks],
                lines=[
                    Line(
                        "answered by peers",
                        [None if w.share is None else w.share * 100 for w in answer_weeks],
                    )
                ],
                x_title="week starting (month-day, UTC)",
                y_title="questions answered (%)",
                unit="%",
                y_max=100,
                ident="peer-answers",
            )
            + f'<p class="note">Over the window: <strong data-figure="peer_answer_share" '
            f'data-value="{"" if report.peer_answer_share is None else report.peer_answer_share}">'
            f"{pct(report.peer_answer_share)}</strong> of {report.questions} questions.</p>"
            if answer_weeks
            else empty_state("No questions in this window.")
        )
        + "</section>"
    )
    return layout("Overview", "".join(body), current="/dashboard")


def _select(name: str, label: str, options: Iterable[str], chosen: str | None) -> str:
    opts = '<option value="">any</option>' + "".join(
        f'<option value="{e(o)}"{" selected" if o == chosen else ""}>{e(o)}</option>'
        for o in options
    )
    return (
        f'<div class="field"><label for="f-{name}">{e(label)}</label>'
        f'<select id="f-{name}" name="{name}">{opts}</select></div>'
    )


def _input(name: str, label: str, kind: str, value: str | None, extra: str = "") -> str:
    return (
        f'<div class="field"><label for="f-{name}">{e(label)}</label>'
        f'<input id="f-{name}" name="{name}" type="{kind}" value="{e(value or "")}" {extra}>'
        "</div>"
    )


def member_link(member_id: str, text: str | None = None) -> str:
    return f'<a href="/dashboard/members/{quote(member_id, safe="")}">{e(text or member_id)}</a>'


def _member_rows(rows: Sequence[MemberRow]) -> str:
    return "".join(
        f'<tr data-member="{e(m.member_id)}"><td>{member_link(m.member_id)}</td>'
        f"<td>{e(m.handle or '')}</td><td>{e(m.stages['awareness'] or '')}</td>"
        f"<td>{e(m.stages['engagement'] or '')}</td><td>{e(m.stages['advocacy'] or '')}</td>"
        f'<td>{e(m.cohort or "")}</td><td class="num">{m.score:.2f}</td>'
        f"<td>{e(', '.join(m.sources))}</td><td>{day(m.joined_at)}</td>"
        f"<td>{day(m.last_active_at)}</td></tr>"
        for m in rows
    )


def members_page(page: MemberPage, form: Mapping[str, str], total_hint: str = "") -> str:
    def v(name: str) -> str | None:
        return form.get(name) or None

    filters = (
        '<form method="get" action="/dashboard/members" class="filters">'
        "<fieldset><legend>Filter</legend>"
        + _input("q", "Handle or member id starts with", "search", v("q"))
        + _select("awareness", "Awareness", dq.STAGES["awareness"], v("awareness"))
        + _select("engagement", "Engagement", dq.STAGES["engagement"], v("engagement"))
        + _select("advocacy", "Advocacy", dq.STAGES["advocacy"], v("advocacy"))
        + _select("cohort", "Cohort", dq.COHORTS, v("cohort"))
        + _select("customer", "Customer", ("true", "false"), v("customer"))
        + _select("advocate", "Advocate or champion", ("true", "false"), v("advocate"))
        + _input("source", "Platform", "text", v("source"))
        + _input("score_min", "Score at least", "number", v("score_min"), 'step="any"')
        + _input("score_max", "Score at most", "number", v("score_max"), 'step="any"')
        + _input("active_after", "Active on or after", "date", v("active_after"))
        + _input("active_before", "Active before", "date", v("active_before"))
        + _select(
            "sort",
            "Sort",
            ("-last_active", "last_active", "-score", "score", "-joined", "joined"),
            v("sort") or dq.DEFAULT_SORT,
        )
        + '<button type="submit">Apply</button> <a href="/dashboard/members">Clear</a>'
        "</fieldset></form>"
    )
    kept = {k: val for k, val in form.items() if val and k not in ("cursor", "limit")}
    csv_link = "/dashboard/members.csv" + ("?" + urlencode(kept) if kept else "")
    actions = (
        f'<p class="actions"><a class="button" id="csv" href="{e(csv_link)}" download>'
        "Download CSV</a></p>"
    )
    if not page.members:
        table = (
            empty_state("No member matches these filters.")
            if kept
            else empty_state("No members yet.")
        )
    else:
        table = (
            '<table class="data" id="directory">'
            f"<caption>Members {e(total_hint)}</caption><thead><tr>"
            + "".join(
                f'<th scope="col">{h}</th>'
                for h in (
                    "member",
                    "handle",
                    "awareness",
                    "engagement",
                    "advocacy",
                    "cohort",
                    "score",
                    "platforms",
                    "joined",
                    "last active",
                )
            )
            + "</tr></thead><tbody>"
            + _member_rows(page.members)
            + "</tbody></table>"
        )
    pager = ""
    if page.next_cursor:
        pager = (
            '<p class="pager"><a rel="next" id="next-page" href="/dashboard/members?'
            + e(urlencode({**kept, "cursor": page.next_cursor}))
            + '">Next page</a></p>'
        )
    return layout("Members", filters + actions + table + pager, current="/dashboard/members")


def profile_page(p: MemberProfile) -> str:
    m = p.member
    stages = "".join(
        f'<li><span class="label">{dim}</span> <strong data-figure="stage:{dim}">'
        f"{e(stage or '-')}</strong></li>"
        for dim, stage in m.stages.items()
    )
    facts = (
        f'<ul class="tiles">{stages}'
        f'<li><span class="label">cohort</span> <strong>{e(m.cohort or "-")}</strong></li>'
        '<li><span class="label">score</span> '
        f'<strong data-figure="score">{m.score:.2f}</strong></li>'
        f'<li><span class="label">joined</span> <strong>{day(m.joined_at)}</strong></li>'
        f'<li><span class="label">last active</span> <strong>{day(m.last_active_at)}</strong></li>'
        '<li><span class="label">platforms</span> '
        f"<strong>{e(', '.join(m.sources) or '-')}</strong></li>"
        "</ul>"
    )
    timeline = (
        '<table class="data" id="timeline"><caption>Journey</caption><thead><tr>'
        '<th scope="col">when</th><th scope="col">dimension</th><th scope="col">move</th>'
        '<th scope="col">why</th></tr></thead><tbody>'
        + "".join(
            f"<tr><td>{day(t.occurred_at)}</td><td>{e(t.dimension)}</td>"
            f"<td>{e(t.from_stage or '-')} → {e(t.to_stage)}</td><td>{e(t.reason)}</td></tr>"
            for t in p.timeline
        )
        + "</tbody></table>"
        if p.timeline
        else "<p>No transitions yet.</p>"
    )
    contributions = (
        "<ul>" + "".join(f"<li>{e(k)}: {n}</li>" for k, n in p.contributions.items()) + "</ul>"
        if p.contributions
        else "<p>None counted.</p>"
    )
    evidence = (
        "<ul>"
        + "".join(f"<li>{e(k)}: {n}</li>" for k, n in p.advocacy_evidence.items())
        + "".join(
            f'<li><a href="{e(u)}" rel="noopener noreferrer">{e(u)}</a></li>'
            for u in p.advocacy_links
            if u.startswith(("http://", "https://"))
        )
        + "</ul>"
        if p.advocacy_evidence
        else "<p>No advocacy signal yet.</p>"
    )

    def peers(rows: Sequence[object], empty: str) -> str:
        if not rows:
            return f"<p>{e(empty)}</p>"
        return (
            "<ul>"
            + "".join(
                f"<li>{member_link(r.member_id)}: {r.threads} threads, {r.accepted} accepted</li>"  # type: ignore[attr-defined]
                for r in rows
            )
            + "</ul>"
        )

    identities = (
        "<ul>"
        + "".join(
            f"<li>{e(i.platform)}: {e(i.platform_user_id)} ({e(i.linked_by)})</li>"
            for i in p.identities
        )
        + "".join(f"<li>merged: {e(mid)}</li>" for mid in p.merged_ids)
        + "</ul>"
        if p.identities or p.merged_ids
        else "<p>No linked identities.</p>"
    )
    recent = (
        '<table class="data" id="recent"><caption>Recent activity</caption><thead><tr>'
        '<th scope="col">when</th><th scope="col">platform</th><th scope="col">kind</th>'
        '<th scope="col">what</th></tr></thead><tbody>'
        + "".join(
            f"<tr><td>{e(a.occurred_at.isoformat()[:16])}</td><td>{e(a.source)}</td>"
            f"<td>{e(a.kind)}</td><td>"
            + (
                f'<a href="{e(a.url)}" rel="noopener noreferrer">{e(a.title or a.url)}</a>'
                if a.url and a.url.startswith(("http://", "https://"))
                else e(a.title or "")
            )
            + "</td></tr>"
            for a in p.recent_activity
        )
        + "</tbody></table>"
        if p.recent_activity
        else "<p>No activity kept.</p>"
    )
    body = (
        f'<p><a href="/dashboard/members">← Members</a></p>{facts}'
        f'<section aria-labelledby="j-h"><h2 id="j-h">Timeline</h2>{timeline}</section>'
        '<div class="columns">'
        f'<section aria-labelledby="c-h"><h2 id="c-h">Contributions</h2>{contributions}</section>'
        f'<section aria-labelledby="a-h"><h2 id="a-h">Advocacy evidence</h2>{evidence}</section>'
        f'<section aria-labelledby="g-h"><h2 id="g-h">Peer help given</h2>'
        f"{peers(p.peer_help_given, 'None yet.')}</section>"
        f'<section aria-labelledby="r-h"><h2 id="r-h">Peer help received</h2>'
        f"{peers(p.peer_help_received, 'None yet.')}</section>"
        f'<section aria-labelledby="i-h"><h2 id="i-h">Linked identities</h2>{identities}</section>'
        "</div>"
        f'<section aria-labelledby="ra-h"><h2 id="ra-h">Recent activity</h2>{recent}</section>'
    )
    title = f"{m.handle} ({m.member_id})" if m.handle else m.member_id
    return layout(title, body, current="/dashboard/members")


def leaderboards_page(board: Leaderboards, start: date | None, end: date | None) -> str:
    advocates = (
        '<table class="data" id="advocates"><caption>Top advocates in the window</caption>'
        '<thead><tr><th scope="col">#</th><th scope="col">member</th><th scope="col">stage</th>'
        '<th scope="col">score</th><th scope="col">signals</th><th scope="col">evidence</th>'
        '<th scope="col">links</th></tr></thead><tbody>'
        + "".join(
            f'<tr data-member="{e(a.member_id)}"><td>{i}</td>'
            f"<td>{member_link(a.member_id, a.handle or a.member_id)}</td>"
            f"<td>{e(a.stage or '-')}</td>"
            f'<td class="num" data-figure="advocate-score:{e(a.member_id)}">{a.score:.2f}</td>'
            f'<td class="num">{a.signals}</td>'
            f"<td>{e(', '.join(f'{k} {n}' for k, n in a.evidence.items()))}</td><td>"
            + " ".join(
                f'<a href="{e(u)}" rel="noopener noreferrer" '
                f'aria-label="evidence {j} of {e(a.member_id)}: {e(u)}">link {j}</a>'
                for j, u in enumerate(a.links[:5], start=1)
                if u.startswith(("http://", "https://"))
            )
            + "</td></tr>"
            for i, a in enumerate(board.advocates, start=1)
        )
        + "</tbody></table>"
        if board.advocates
        else empty_state("No advocate signal in this window.")
    )
    champions = (
        '<table class="data" id="champions"><caption>Current champions</caption><thead><tr>'
        '<th scope="col">member</th><th scope="col">since</th><th scope="col">rank</th>'
        '<th scope="col">why</th></tr></thead><tbody>'
        + "".join(
            f'<tr data-member="{e(c.member_id)}">'
            f"<td>{member_link(c.member_id, c.handle or c.member_id)}</td>"
            f"<td>{day(c.since)}</td><td>{e(c.rank or '-')}</td><td>{e(c.reason)}</td></tr>"
            for c in board.champions
        )
        + "</tbody></table>"
        if board.champions
        else empty_state("No champions right now.")
    )
    body = (
        _window_form("/dashboard/leaderboards", start, end)
        + f'<section aria-labelledby="adv-h"><h2 id="adv-h">Top advocates</h2>{advocates}</section>'
        + f'<section aria-labelledby="ch-h"><h2 id="ch-h">Champions</h2>{champions}</section>'
    )
    return layout("Leaderboards", body, current="/dashboard/leaderboards")
