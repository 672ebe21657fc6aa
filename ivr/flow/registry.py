"""All flows of a directory, kept current while the server runs (hot reload), and call routing.

The registry never starts threads: the server calls ``refresh()`` now and then. A changed file is
reloaded; if the edit is invalid the last good version keeps running and the errors are logged and kept
in ``errors``. A call holds the ``Flow`` object it got from ``get``/``route`` until it ends, so reloads
never change a call in progress.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ivr.errors import Diagnostic, FlowError
from ivr.flow.loader import ClassifierFactory, default_classifier_factory, load_flow
from ivr.flow.schema import Flow

log = logging.getLogger(__name__)

FLOW_SUFFIXES = (".yaml", ".yml")


ReloadListener = Callable[[str], None]
"""Told the result ('ok' or 'error') of every reload of a changed file (e.g. a metrics counter)."""


@dataclass
class _Entry:
    flow: Flow | None
    stamps: dict[Path, tuple[int, int]]  # keyed by resolved path, as the compiler names a flow's sources
    revision: int = 0


def _stamps(paths: Iterable[Path]) -> dict[Path, tuple[int, int]]:
    return {p.resolve(): _stamp(p) for p in paths}


def content_version(paths: Iterable[Path]) -> str:
    """A short digest of a flow's files (the flow file and its sub-flows): which edit is running."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        try:
            digest.update(path.read_bytes())
        except OSError:
            digest.update(b"\0")
    return digest.hexdigest()[:12]


def _stamp(path: Path) -> tuple[int, int]:
    try:
        info = path.stat()
    except OSError:
        return (0, -1)
    return (info.st_mtime_ns, info.st_size)


def user_part(address: str) -> str:
    """``sip:1000@pbx.example.com`` → ``1000``; a bare number or name is returned as is."""
    address = address.strip().strip("<>")
    for scheme in ("sips:", "sip:", "tel:"):
        if address.startswith(scheme):
            address = address[len(scheme):]
    return address.split("@", 1)[0].split(";", 1)[0]


class FlowRegistry:
    """Loads every ``*.yaml`` flow directly in ``directory`` (sub-directories hold sub-flows and are
    not loaded on their own).

    ``strict=True`` (the server's start-up) raises FlowError listing the problems of every invalid
    file; otherwise invalid files are skipped and reported in ``errors``. ``default_flow`` names the flow
    used for numbers no flow claims (default: a flow named 'hotline' or 'default', else the first by name).
    ``server_queues`` (the names in the server's queues file) are the only queues a flow may transfer to;
    ``hour_names`` (its calendars and queues) the only names ``open('…')`` may take.
    """

    def __init__(self, directory: str | Path, known_queues: Iterable[str] = (),
                 classifier_factory: ClassifierFactory | None = default_classifier_factory,
                 default_flow: str | None = None, strict: bool = True,
                 server_queues: Iterable[str] | None = None, on_reload: ReloadListener | None = None,
                 hour_names: Iterable[str] | None = None) -> None:
        self.directory = Path(directory)
        self.on_reload = on_reload
        self._loaded_once = False  # the constructor's first pass is loading, not reloading
        self.known_queues = tuple(known_queues)
        self.server_queues = None if server_queues is None else tuple(server_queues)
        self.hour_names = None if hour_names is None else tuple(hour_names)
        self.classifier_factory = classifier_factory
        self.default_flow = default_flow
        self.errors: dict[str, list[Diagnostic]] = {}
        self._entries: dict[Path, _Entry] = {}
        if not self.directory.is_dir():
            raise FlowError([Diagnostic(str(self.directory), 0, 0, "flow directory not found; create it or "
                                                                  "point the server at the folder of your flows")])
        self.refresh()
        self._loaded_once = True
        if strict and self.errors:
            raise FlowError([d for diagnostics in self.errors.values() for d in diagnostics])
        if not self.names():
            raise FlowError([Diagnostic(str(self.directory), 0, 0, "no valid flow files (*.yaml) here")])
        if default_flow is not None and default_flow not in self.names():
            raise FlowError([Diagnostic(str(self.directory), 0, 0,
                                        f"default flow '{default_flow}' not found; flows: {', '.join(self.names())}")])

    # ---- lookup ------------------------------------------------------------------------------------

    def _flows(self) -> dict[str, Flow]:
        return {e.flow.name: e.flow for e in self._entries.values() if e.flow is not None}

    def names(self) -> list[str]:
        """Names of the flows currently loaded."""
        return sorted(self._flows())

    def get(self, name: str) -> Flow:
        """The current version of flow ``name``; raises FlowError when there is none."""
        flow = self._flows().get(name)
        if flow is None:
            raise FlowError([Diagnostic(str(self.directory), 0, 0,
                                        f"no flow named '{name}'; loaded flows: {', '.join(self.names())}")])
        return flow

    def match(self, called: str) -> Flow | None:
        """The flow that claims a dialled number or SIP URI (its user part in ``numbers:``, or a flow of that
        name); None when no flow does."""
        wanted = user_part(called)
        flows = self._flows()
        for flow in flows.values():
            if wanted in flow.numbers:
                return flow
        return flows.get(wanted)

    def default(self) -> Flow:
        """The flow for numbers no flow claims."""
        return self.get(self._default_name())

    def route(self, called: str) -> Flow:
        """The flow for a dialled number or SIP URI: ``match``, else the default flow."""
        return self.match(called) or self.default()

    def _default_name(self) -> str:
        names = self.names()
        if self.default_flow and self.default_flow in names:
            return self.default_flow
        for candidate in ("hotline", "default"):
            if candidate in names:
                return candidate
        return names[0]

    # ---- reload ------------------------------------------------------------------------------------

    def refresh(self) -> list[str]:
        """Re-stat the flow files (and their sub-flows); reload what changed. Returns the names of flows
        (re)loaded. An invalid edit keeps the previous version and its errors go to ``errors`` and the log."""
        reloaded: list[str] = []
        present = {p for p in sorted(self.directory.iterdir()) if p.suffix in FLOW_SUFFIXES and p.is_file()}
        for gone in set(self._entries) - present:
            removed = self._entries.pop(gone)
            self.errors.pop(str(gone), None)
            if removed.flow is not None:
                log.warning("flow file %s was removed; flow '%s' is no longer available", gone, removed.flow.name)
        for path in sorted(present):
            entry = self._entries.get(path)
            if entry is not None and all(_stamp(p) == stamp for p, stamp in entry.stamps.items()):
                continue
            name = self._load(path, entry)
            if name:
                reloaded.append(name)
        return reloaded

    def _load(self, path: Path, entry: _Entry | None) -> str | None:
        """Parse a new or changed file once; a broken one is not parsed again until one of its files changes
        (its stamps cover the file and the sub-flows of its last good version)."""
        kept = entry.flow if entry is not None else None
        revision = entry.revision if entry is not None else 0
        try:
            flow = load_flow(path, self.known_queues, self.classifier_factory, self.server_queues, self.hour_names)
        except FlowError as exc:
            self.errors[str(path)] = exc.diagnostics
            # also the files the errors are in (a broken sub-flow or knowledge file): fixing one reloads
            named = {Path(d.path) for d in exc.diagnostics if d.path and Path(d.path).is_file()}
            watched = {*(entry.stamps if entry is not None else ()), path, *named}
            self._entries[path] = _Entry(kept, _stamps(watched), revision)
            action = f"keeping the last good version of '{kept.name}'" if kept else "flow not loaded"
            log.error("invalid flow %s (%s):\n%s", path, action, "\n".join(str(d) for d in exc.diagnostics))
            self._reloaded("error")
            return None
        clash = [p for p, e in self._entries.items() if p != path and e.flow is not None and e.flow.name == flow.name]
        if clash:
            diagnostic = Diagnostic(str(path), 0, 0, f"flow name '{flow.name}' is already used by {clash[0]}; "
                                                     "give each flow a unique 'name'")
            self.errors[str(path)] = [diagnostic]
            self._entries[path] = _Entry(kept, _stamps({path, *flow.sources}), revision)
            log.error("%s", diagnostic)
            self._reloaded("error")
            return None
        self.errors.pop(str(path), None)
        self._entries[path] = _Entry(flow, _stamps(flow.sources), revision + 1)
        if self._loaded_once:
            log.info("%s flow '%s' version %s (revision %d) from %s", "reloaded" if entry else "added", flow.name,
                     content_version(flow.sources), revision + 1, path)
            self._reloaded("ok")
        return flow.name

    def _reloaded(self, result: str) -> None:
        if not self._loaded_once or self.on_reload is None:
            return
        try:
            self.on_reload(result)
        except Exception:
            log.exception("reload listener failed")
