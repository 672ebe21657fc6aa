"""What the console pages and the API show, built from the store (so another process can serve it)."""

from __future__ import annotations

import time
from typing import Any

from ivr.queue import AcdConfig
from ivr.store import Store
from ivr.store.views import call_view, for_handoff
from ivr.web.auth import User


def queue_view(store: Store, config: AcdConfig | None, now: float | None = None) -> dict[str, Any]:
    """Per queue: callers waiting (in offer order) and connected; every agent's state."""
    now = time.time() if now is None else now
    names = list(config.queues) if config else []
    queues: dict[str, dict[str, list[dict[str, Any]]]] = {n: {"waiting": [], "connected": []} for n in names}
    rows = sorted(store.live_queue_rows(), key=lambda r: (-r["priority"], r["enqueued_at"], r["id"]))
    for row in rows:
        q = queues.setdefault(row["queue"], {"waiting": [], "connected": []})
        item = {
            "call_id": row["call_id"],
            "caller": row["caller"],
            "intent": row["intent"],
            "priority": row["priority"],
            "state": row["state"],
            "agent": row["agent"],
            "node": row["node"],
            "enqueued_at": row["enqueued_at"],
            "wait": round((row["answered_at"] or now) - row["enqueued_at"], 1),
        }
        if row["state"] == "connected":
            q["connected"].append(item)
        else:
            item["position"] = len(q["waiting"]) + 1
            q["waiting"].append(item)
    states = store.load_agent_states()
    agent_names = list(config.agents) if config else []
    agent_names += [n for n in states if n not in agent_names]
    agents = []
    for name in agent_names:
        s = states.get(name)
        agents.append(
            {
                "name": name,
                "state": s["state"] if s else "offline",
                "reason": s["reason"] if s else "",
                "since": s["state_since"] if s else None,
                "call_id": s["call_id"] if s else None,
                "missed_offers": s["missed_offers"] if s else 0,
            }
        )
    return {"at": now, "queues": queues, "agents": agents, "nodes": store.list_nodes()}


def mask_number(number: str) -> str:
    """A phone number (or SIP address) with every digit but the last four replaced by '*'."""
    digits = [i for i, ch in enumerate(number) if ch.isdigit()]
    hidden = set(digits[:-4])
    return "".join("*" if i in hidden else ch for i, ch in enumerate(number))


def view_for(user: User, view: dict[str, Any], config: AcdConfig | None) -> dict[str, Any]:
    """What ``user`` may see of a :func:`queue_view`: supervisors everything; an agent only the queues they
    take calls from (caller numbers masked) and their own state."""
    if user.at_least("supervisor"):
        return view
    mine = {q for q in config.queues if any(a.name == user.name for a in config.members(q))} if config else set()

    def masked(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**item, "caller": mask_number(item["caller"] or "")} for item in items]

    queues = {name: {k: masked(v) for k, v in q.items()} for name, q in view["queues"].items() if name in mine}
    return {**view, "queues": queues, "agents": [a for a in view["agents"] if a["name"] == user.name]}


def shown_call(call: dict[str, Any], handling: bool = True) -> dict[str, Any]:
    """A stored call as shown in the console: to the people handling it (the agent it was offered to or
    taken by, supervisors: see :func:`can_see_call`) the collected values in full, card numbers to their
    last 4 digits, secrets masked; to anyone else masked."""
    return call_view(call, handling=handling)


def recording_paths(call: dict[str, Any]) -> list[str]:
    """The files of a call's recordings and voicemail (the store's recordings, then files only named by an
    older version's ``recording`` events), in the order they were made."""
    paths = [str(r["path"]) for r in call.get("recordings", [])]
    return paths + [str(e["data"]["path"]) for e in call.get("events", [])
                    if e.get("kind") == "recording" and isinstance(e.get("data"), dict) and e["data"].get("path")
                    and str(e["data"]["path"]) not in paths]


def voicemail_queues(user: User, config: AcdConfig | None) -> set[str] | None:
    """The queues whose voicemail ``user`` works through: None (all) for supervisors, else the queues the
    agent takes calls from (none without a queues file)."""
    if user.at_least("supervisor"):
        return None
    return {q for q in config.queues if any(a.name == user.name for a in config.members(q))} if config else set()


def shown_voicemail(user: User, mail: dict[str, Any]) -> dict[str, Any]:
    """A voicemail as ``user`` sees it: the caller's number in full for supervisors, else masked (as in the
    agents' queue view)."""
    caller = mail.get("caller") or ""
    return {**mail, "caller": caller if user.at_least("supervisor") else mask_number(caller)}


def can_see_call(user: User, call: dict[str, Any]) -> bool:
    """Supervisors see every call; an agent only calls offered to or taken by them."""
    if user.at_least("supervisor"):
        return True
    if call.get("agent") == user.name:
        return True
    return any(e.get("agent") == user.name for e in call.get("queue_entries", []))


def screen_pop(store: Store, agent: str, now: float | None = None) -> dict[str, Any] | None:
    """The call ringing on, or connected to, ``agent`` with everything the bot learned (the collected values
    in full: the agent is handling the call; card numbers to their last 4 digits, secrets masked)."""
    now = time.time() if now is None else now
    state = store.load_agent_states().get(agent)
    if state is None or state["state"] not in ("ringing", "on_call") or not state["call_id"]:
        return None
    call = store.get_call(state["call_id"])
    if call is None:
        return None
    entry = call["queue_entries"][-1] if call["queue_entries"] else {}
    context = {**(entry.get("context") or {}), **(call["context"] or {})}
    first_enqueued = call["queue_entries"][0]["enqueued_at"] if call["queue_entries"] else now
    pop = shown_call(call)
    pop["context"] = for_handoff(context)
    pop["agent_state"] = state["state"]
    pop["queue"] = entry.get("queue")
    pop["priority"] = entry.get("priority", 0)
    pop["wait"] = round((entry.get("answered_at") or now) - first_enqueued, 1)
    pop["intent"] = context.get("intent") or call["intent"]
    pop["confidence"] = context.get("confidence")
    pop["slots"] = pop["context"].get("slots") or {}
    return pop
