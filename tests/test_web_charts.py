"""The supervisor page's charts (axes, labels that never overlap, empty and long ranges) and the drill-down
from its figures to exactly the calls they count, through Flask's test client over a real SQLite store."""

from __future__ import annotations

import datetime as dt
import html
import itertools
import re
import time
from pathlib import Path

import pytest
from test_web import Env  # tests/ is on sys.path (pytest's default import mode)

from ivr.reports import build_report, day_bounds
from ivr.web.charts import CHAR_WIDTH, Bar, bar_chart

X_LABEL = re.compile(r'<text class="x-label" x="([\d.]+)" y="[\d.]+">([^<]*)</text>')
Y_TICK = re.compile(r'<text class="y-tick" [^>]*>([^<]*)</text>')


def days(n: int, first: dt.date = dt.date(2026, 9, 1)) -> list[Bar]:
    return [Bar((first + dt.timedelta(days=i)).isoformat()[5:], float(i % 7)) for i in range(n)]


def assert_labels_apart(svg: str) -> list[str]:
    labels = [(float(x), text) for x, text in X_LABEL.findall(svg)]
    for (x1, a), (x2, b) in itertools.pairwise(labels):
        assert x2 - x1 >= (len(a) + len(b)) / 2 * CHAR_WIDTH + 4, (a, b)
    return [text for _, text in labels]


def test_an_empty_chart_has_an_axis_and_says_there_is_nothing() -> None:
    svg = bar_chart("Calls per day", [], axis="calls", chart_id="c")
    assert Y_TICK.findall(svg) == ["0", "1"] and "No calls in this period" in svg
    assert 'class="bar"' not in svg and "<caption>Calls per day</caption>" in svg
    gaps = bar_chart("Containment", [Bar("09-01", None), Bar("09-02", None)], unit="%")
    assert Y_TICK.findall(gaps) == ["0%", "25%", "50%", "75%", "100%"] and 'class="bar"' not in gaps
    assert "<td>–</td>" in gaps


def test_one_day_of_hours_gets_round_ticks_and_readable_labels() -> None:
    bars = [Bar(f"{h:02d}", float(h * 3 % 17), href=f"/calls?hour={h}") for h in range(24)]
    svg = bar_chart("Calls per hour", bars, axis="calls")
    assert Y_TICK.findall(svg) == ["0", "5", "10", "15", "20"]  # the peak is 16
    assert svg.count('<line class="grid"') == 5 and '<text class="y-axis"' in svg
    labels = assert_labels_apart(svg)
    assert labels[0] == "00" and 8 <= len(labels) <= 24
    assert svg.count('<a href="/calls?hour=') == 24 * 2  # a link per bar, and in the table
    waits = bar_chart("Wait", [Bar("a", 12.5), Bar("b", 3.0)], unit="s")
    assert Y_TICK.findall(waits) == ["0 s", "5 s", "10 s", "15 s"] and "a: 12.5 s" in waits


@pytest.mark.parametrize("n", [1, 7, 31, 92])
def test_day_labels_never_overlap(n: int) -> None:
    svg = bar_chart("Calls per day", days(n))
    labels = assert_labels_apart(svg)
    assert labels[0] == "09-01" and len(labels) <= 14
    assert svg.count('class="bar"') == sum(1 for b in days(n) if b.value is not None)
    assert svg.count("<tr><td>") == n  # every day in the table, labelled or not


def test_chart_text_is_escaped() -> None:
    svg = str(bar_chart("<script>x</script>", [Bar("<b>", 1.0, "<i>", '/calls?a="1"&b=<2>')], chart_id='a"b'))
    for raw in ("<script>", "<b>", "<i>", 'a"b'):
        assert raw not in svg
    assert 'href="/calls?a=&#34;1&#34;&amp;b=&lt;2&gt;"' in svg


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def fill(env: Env) -> float:
    """Today: 6 calls (2 contained, 4 queued: 2 abandoned in support, 1 answered by ann in support, 1 answered
    by ben in sales); yesterday: 1 call abandoned in support (not today's)."""
    store, now = env.store, time.time()
    start = max(day_bounds(dt.date.today())[0] + 60, now - 3600)
    plan = [("c1", "completed", None, "", ""), ("c2", "completed", None, "", ""),
            ("q1", "abandoned", "support", "abandoned", ""), ("q2", "abandoned", "support", "abandoned", ""),
            ("q3", "transferred", "support", "completed", "ann"), ("q4", "transferred", "sales", "completed", "ben")]
    for i, (call_id, outcome, queue, state, agent) in enumerate(plan):
        at = start + i
        store.start_call(call_id, f"+1555000{i}", "100", "support", at)
        store.set_context(call_id, {"intent": "billing" if queue else "faq"})
        if queue:
            entry = store.add_queue_entry(call_id, queue, 0, at + 1, {})
            answered = {"answered_at": at + 5, "agent": agent} if agent else {}
            store.update_queue_entry(entry, state=state, ended_at=at + 20, **answered)
        store.end_call(call_id, at + 30, outcome)
    old = start - 86400 * 2
    store.start_call("old", "+15559999", "100", "support", old)
    store.update_queue_entry(store.add_queue_entry("old", "support", 0, old + 1, {}), state="abandoned",
                             ended_at=old + 9)  # fmt: skip
    store.end_call("old", old + 10, "abandoned")
    return start


def listed(env: Env, client: object, href: str) -> set[str]:
    page = client.get(html.unescape(href))  # type: ignore[attr-defined]
    assert page.status_code == 200, href
    text = page.get_data(as_text=True)
    ids = set(re.findall(r'href="/calls/([^"]+)"', text))
    total = int(re.search(r'<p id="calls-total">(\d+) call', text).group(1))  # type: ignore[union-attr]
    assert total == len(ids)
    return ids


def test_every_figure_leads_to_exactly_the_calls_it_counts(env: Env) -> None:
    fill(env)
    sue = env.client("sue")
    page = sue.get("/supervisor").get_data(as_text=True)
    today = dt.date.today().isoformat()
    tiles = re.findall(r'<a class="tile" href="([^"]+)"><span>([^<(]+)', page)
    by_name = {name.strip(): href for href, name in tiles}
    assert listed(env, sue, by_name["Calls"]) == {"c1", "c2", "q1", "q2", "q3", "q4"}
    assert listed(env, sue, by_name["Containment"]) == {"c1", "c2"}
    assert listed(env, sue, by_name["Transferred"]) == {"q1", "q2", "q3", "q4"}
    abandoned = by_name["Abandoned in queue"]
    assert f"since={today}" in abandoned and "figure=abandoned" in abandoned
    assert listed(env, sue, abandoned) == {"q1", "q2"}
    assert re.search(r"Abandoned in queue \(2\)", page)
    assert listed(env, sue, by_name["Average speed of answer"]) == {"q3", "q4"}
    # the per-queue table: "abandoned today in support", and ben's answered calls in the per-agent table
    support = re.search(r'<tr><td><a href="([^"]+)">support</a></td>(.*?)</tr>', page)
    assert support and listed(env, sue, support.group(1)) == {"q1", "q2", "q3"}
    cells = re.findall(r'<a href="([^"]+)">(\d+)</a>', support.group(2))
    abandoned_cell = next(h for h, _ in cells if "figure=abandoned" in h)
    assert "queue=support" in abandoned_cell and listed(env, sue, abandoned_cell) == {"q1", "q2"}
    ben = re.search(r'<tr><td><a href="([^"]+)">ben</a>', page)
    assert ben and listed(env, sue, ben.group(1)) == {"q4"}
    billing = re.search(r'<tr><td><a href="([^"]+)">billing</a>', page)
    assert billing and listed(env, sue, billing.group(1)) == {"q1", "q2", "q3", "q4"}


def test_figures_and_listings_agree_with_the_report(env: Env) -> None:
    start = fill(env)
    sue = env.client("sue")
    first = dt.date.today() - dt.timedelta(days=3)
    since, until = day_bounds(first)[0], day_bounds(dt.date.today())[1]
    summary = build_report(env.store, since, until).summary
    base = f"/calls?since={first.isoformat()}&until={dt.date.today().isoformat()}"
    for figure, key in (("abandoned", "abandoned"), ("answered", "answered"), ("queued", "queued"),
                        ("contained", "contained"), ("transferred", "transferred")):  # fmt: skip
        assert len(listed(env, sue, f"{base}&figure={figure}")) == summary[key], figure
    assert listed(env, sue, f"{base}&intent=%28none%29") == {"old"}
    assert listed(env, sue, f"{base}&intent=faq&flow=support") == {"c1", "c2"}
    hour = dt.datetime.fromtimestamp(start).hour
    times = {c: start + i for i, c in enumerate(["c1", "c2", "q1", "q2", "q3", "q4"])}
    times["old"] = start - 86400 * 2  # over more than two days, an hour of the day is that hour of every day
    in_hour = {c for c, at in times.items() if dt.datetime.fromtimestamp(at).hour == hour}
    assert "c1" in in_hour and listed(env, sue, f"{base}&hour={hour}") == in_hour
    chart = sue.get(f"/supervisor?since={first.isoformat()}&until={dt.date.today().isoformat()}").get_data(as_text=True)
    day_bars = re.findall(r'<a href="([^"]+figure=abandoned[^"]*)"><rect', chart)
    assert len(day_bars) == 2  # the old call's day and today; no bar for days with no queued call
    assert set().union(*(listed(env, sue, href) for href in day_bars)) == {"old", "q1", "q2"}


def test_agents_list_only_their_own_calls(env: Env) -> None:
    fill(env)
    ann = env.client("ann")
    assert listed(env, ann, "/calls") == {"q3"}
    assert listed(env, ann, "/calls?agent=ben") == set()
    assert listed(env, ann, "/calls?figure=abandoned&queue=support") == set()
    assert "My calls" in ann.get("/calls").get_data(as_text=True)
    assert ann.get("/supervisor").status_code == 403


BAD = ["figure=everything", "hour=24", "since=yesterday", "since=2026-02-02&until=2026-02-01", "queue=" + "x" * 201]


@pytest.mark.parametrize("query", BAD)
def test_bad_filters_are_refused_plainly(env: Env, query: str) -> None:
    assert env.client("sue").get(f"/calls?{query}").status_code == 400


def test_filter_values_are_escaped(env: Env) -> None:
    page = env.client("sue").get("/calls?queue=%3Cscript%3E&intent=%22x").get_data(as_text=True)
    assert "<script>" not in page and 'value="&lt;script&gt;"' in page and "0 calls" in page


def test_long_range_page_stays_readable(env: Env) -> None:
    fill(env)
    last = dt.date.today()
    first = last - dt.timedelta(days=91)
    page = env.client("sue").get(f"/supervisor?since={first.isoformat()}&until={last.isoformat()}")
    assert page.status_code == 200
    charts = re.findall(r'<figure class="chart" id="([^"]+)">(.*?)</figure>', page.get_data(as_text=True))
    assert [c for c, _ in charts] == ["chart-hours", "chart-calls", "chart-containment", "chart-abandonment",
                                      "chart-asa", "chart-service_level"]  # fmt: skip
    for _, svg in charts:
        assert len(assert_labels_apart(svg)) <= 24 and Y_TICK.findall(svg)


def test_the_count_of_a_listing_stops_at_its_cap(env: Env) -> None:
    fill(env)
    assert env.store.count_listed_calls() == 7
    assert env.store.count_listed_calls(cap=3) == 4  # "more than 3"


def surveys(env: Env) -> None:
    """CSAT from c1 (4), q3 (ann, 5), q4 (ben, 2); NPS from c2 (3), q3 (10), q4 (7); a caller's words that
    look like markup and a formula in q4's intent; an out-of-range CSAT the context holds is not an answer."""
    for call_id, csat, nps in (("c1", 4, None), ("c2", None, 3), ("q3", 5, 10), ("q4", 2, 7)):
        env.store.set_survey(call_id, csat=csat, nps=nps)
    for call_id, agent in (("q3", "ann"), ("q4", "ben")):  # connected, as the ACD does: the call's agent
        entry = env.store.get_call(call_id)["queue_entries"][-1]["id"]  # type: ignore[index]
        env.store.update_queue_entry(entry, state="connected", agent=agent)
        env.store.update_queue_entry(entry, state="completed")
    env.store.set_context("q4", {"intent": "=HYPERLINK(\"x\")<script>"})
    env.store.set_context("q1", {"intent": "billing", "csat": 9})


def test_csat_and_nps_lead_to_the_answers_they_count(env: Env) -> None:
    fill(env)
    surveys(env)
    sue = env.client("sue")
    page = sue.get("/supervisor").get_data(as_text=True)
    tiles = dict((name.strip(), href) for href, name in re.findall(r'<a class="tile" href="([^"]+)"><span>([^<(]+)',
                                                                  page))  # fmt: skip
    assert re.search(r"Satisfaction \(3\)", page) and re.search(r"NPS \(3\)", page)
    assert listed(env, sue, tiles["Satisfaction"]) == {"c1", "q3", "q4"}
    assert listed(env, sue, tiles["NPS"]) == {"c2", "q3", "q4"}
    listing = sue.get(html.unescape(tiles["NPS"])).get_data(as_text=True)
    row = r'<tr><td><a href="/calls/([^"]+)">.*?<td class="score">([^<]*)</td><td class="nps-\w+">(\w+)</td>'
    rows = re.findall(row, listing, re.S)
    assert sorted(rows) == [("c2", "3", "detractor"), ("q3", "10", "promoter"), ("q4", "7", "passive")]
    assert "<script>" not in listing and "&lt;script&gt;" in listing
    csat = sue.get(html.unescape(tiles["Satisfaction"])).get_data(as_text=True)
    assert "<th>CSAT (1-5)</th>" in csat
    assert sorted(re.findall(r'<td class="score">([^<]*)</td>', csat)) == ["2", "4", "5"]
    # the per-agent table's CSAT of ann: the answers of the calls she took
    ann = re.search(r'<tr><td><a href="[^"]+">ann</a></td>(.*?)</tr>', page)
    assert ann
    csat_cells = [h for h in re.findall(r'<a href="([^"]+)">', ann.group(1)) if "figure=csat" in h]
    assert csat_cells and all(listed(env, sue, h) == {"q3"} for h in csat_cells)
    flows = re.search(r'<tr><td><a href="[^"]+">support</a></td>(.*?)</tr>', page.split('id="table-flows"')[1])
    assert flows
    nps_cells = re.findall(r'<a href="([^"]+figure=nps[^"]*)">', flows.group(1))
    assert nps_cells and all(listed(env, sue, h) == {"c2", "q3", "q4"} for h in nps_cells)


def test_a_listing_exports_as_csv_with_numbers_masked_and_formulas_quoted(env: Env) -> None:
    import csv
    import io

    fill(env)
    surveys(env)
    today = dt.date.today().isoformat()
    sue = env.client("sue")
    listing = sue.get(f"/calls?since={today}&until={today}&figure=nps").get_data(as_text=True)
    href = re.search(r'<a class="csv" id="calls-csv" href="([^"]+)"', listing)
    assert href and "figure=nps" in href.group(1)
    resp = sue.get(html.unescape(href.group(1)))
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    assert resp.headers["Cache-Control"] == "no-store" and "attachment" in resp.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(resp.get_data(as_text=True))))
    assert {(r["call_id"], r["nps"], r["nps_group"]) for r in rows} == {
        ("c2", "3", "detractor"), ("q3", "10", "promoter"), ("q4", "7", "passive")}
    by_id = {r["call_id"]: r for r in rows}
    assert by_id["q3"]["caller"] == "'+****0004" and by_id["q3"]["agent"] == "ann"  # +15550004, masked
    assert by_id["q4"]["intent"].startswith("'=HYPERLINK")
    everything = list(csv.DictReader(io.StringIO(sue.get(f"/calls.csv?since={today}").get_data(as_text=True))))
    assert len(everything) == 6 and {r["csat"] for r in everything} == {"", "4", "5", "2"}
    # the same access as the listing: an agent gets only the calls offered to or taken by them; nobody else any
    mine = list(csv.DictReader(io.StringIO(env.client("ann").get("/calls.csv?figure=csat").get_data(as_text=True))))
    assert [r["call_id"] for r in mine] == ["q3"]
    anonymous = env.client().get("/calls.csv?figure=csat")
    assert anonymous.status_code == 302 and "/login" in anonymous.headers["Location"]
    assert env.client("sue").get("/calls.csv?figure=everything").status_code == 400


def test_an_export_streams_every_page_of_its_listing_once(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    import csv
    import io

    from ivr.web import pages

    fill(env)
    monkeypatch.setattr(pages, "EXPORT_PAGE", 4)
    resp = env.client("sue").get("/calls.csv", buffered=False)
    pieces = list(resp.response)
    rows = list(csv.DictReader(io.StringIO(b"".join(pieces).decode())))
    assert [r["call_id"] for r in rows] == ["q4", "q3", "q2", "q1", "c2", "c1", "old"]  # newest first, each once
    assert len(pieces) == 2  # the header with the first page of 4, then the last page
    monkeypatch.setattr(pages, "EXPORT_CAP", 5)
    assert len(list(csv.DictReader(io.StringIO(env.client("sue").get("/calls.csv").get_data(as_text=True))))) == 5
