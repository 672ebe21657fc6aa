// ivr console: live fragments over server-sent events, forms without reloads. No external code.
"use strict";

(function () {
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;
  const timers = new Map();
  const lastRun = new Map();

  async function refresh(el) {
    const resp = await fetch(el.dataset.refresh, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } });
    if (resp.redirected || resp.status === 401) { window.location.reload(); return; }
    if (resp.ok) { el.innerHTML = await resp.text(); el.dataset.updated = String(Date.now()); }
  }

  function schedule(el) {
    const minInterval = Number(el.dataset.minInterval || 0);
    const wait = Math.max(50, minInterval - (Date.now() - (lastRun.get(el) || 0)));
    if (timers.has(el)) return;
    timers.set(el, setTimeout(() => {
      timers.delete(el);
      lastRun.set(el, Date.now());
      refresh(el).catch(() => {});
    }, wait));
  }

  function connect(targets) {
    const source = new EventSource("/events");
    source.addEventListener("change", () => targets.forEach(schedule));
    source.addEventListener("open", () => document.body.classList.add("live"));
    source.addEventListener("error", () => document.body.classList.remove("live"));
  }

  document.addEventListener("submit", async (ev) => {
    const form = ev.target;
    if (!form.classList || !form.classList.contains("js-fetch")) return;
    ev.preventDefault();
    const data = new FormData(form);
    if (ev.submitter && ev.submitter.name) data.set(ev.submitter.name, ev.submitter.value);
    const resp = await fetch(form.action, {
      method: "POST", body: data, credentials: "same-origin",
      headers: { "X-Requested-With": "fetch", "X-CSRF-Token": csrf() },
    });
    const panel = document.getElementById(form.dataset.target || "panel");
    if (resp.ok && panel) panel.innerHTML = await resp.text();
    else if (!resp.ok) window.alert("Not saved: " + resp.status + " " + (await resp.text()).slice(0, 200));
  });

  function tickWaits() {
    const now = Date.now() / 1000;
    document.querySelectorAll("tr.waiting td.wait[data-since], tr.offering td.wait[data-since]").forEach((td) => {
      td.textContent = Math.max(0, Math.round(now - Number(td.dataset.since))) + " s";
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    const targets = Array.from(document.querySelectorAll("[data-refresh]"));
    if (targets.length) connect(targets);
    setInterval(tickWaits, 1000);
  });
})();
