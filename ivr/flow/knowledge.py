"""Knowledge files: the questions a flow answers on its own (question variants → spoken answer).

```yaml
version: 1
threshold: 0.4            # optional: confidence below which a question is unanswered
entries:
  returns:
    questions: ["what is your returns policy", "can I return an item"]
    answer: "You can return any unused item within 30 days."
    follow_up: return_help_offer   # optional: the flow node to go to after this answer
```

:func:`compile_knowledge` reads and checks one file, reporting every problem as ``file:line:col``. The
flow compiler checks what depends on the flow (answer templates' variables, ``follow_up`` nodes); the
loader builds the matcher (:mod:`ivr.nlu.intents`, one "intent" per entry).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ivr.errors import Diagnostic
from ivr.flow.fields import IDENTIFIER, Reader, normalize_utterance
from ivr.flow.templates import Template, TemplateProblem, compile_template
from ivr.nlu.types import IntentClassifier
from ivr.yamlsource import Y, load_yaml_file

KNOWLEDGE_KEYS = ("version", "description", "threshold", "entries")
ENTRY_KEYS = ("questions", "answer", "follow_up", "description")
DEFAULT_THRESHOLD = 0.4
"""Chosen on the hotline's paraphrase set (tests/data/faq_paraphrases.csv): off-topic questions score
under 0.1, paraphrases of an entry mostly above 0.6."""


@dataclass(eq=False)
class KnowledgeEntry:
    """One answer and the questions it answers; ``line``/``col``: where the entry is written."""

    name: str
    line: int
    col: int
    questions: tuple[str, ...]
    answer: Template
    follow_up: str | None = None
    follow_up_at: tuple[int, int] = (0, 0)
    answer_at: tuple[int, int] = (0, 0)


@dataclass(eq=False)
class Knowledge:
    """A checked knowledge file, shared read-only by every call of the flows that use it."""

    path: str
    """The file as shown in messages (relative to where the flow was named from)."""
    source: Path
    entries: dict[str, KnowledgeEntry]
    threshold: float = DEFAULT_THRESHOLD
    matcher: IntentClassifier | None = None
    """Entry name ↔ question matcher, built by the loader (None until then, or with classifiers off)."""
    exact: dict[str, str] = field(default_factory=dict)
    """Normalised question variant → entry: an exact variant matches without the model."""

    def examples(self) -> dict[str, list[str]]:
        """Entry name → its question variants (the matcher's training data)."""
        return {name: list(entry.questions) for name, entry in self.entries.items()}


def compile_knowledge(path: Path, shown: str) -> tuple[Knowledge | None, list[Diagnostic]]:
    """Read and check a knowledge file; the result is None when there is any problem."""
    root, problems = load_yaml_file(path, shown, kind="knowledge", advice="split it into several files",
                                    empty="the file is empty; a knowledge file needs 'version: 1' and 'entries'")
    if root is None:
        return None, problems
    r = Reader(shown)
    knowledge = _read(root, r, path, shown)
    diagnostics = sorted(set(r.diagnostics), key=lambda d: (d.line, d.column))
    return (None if diagnostics else knowledge), diagnostics


def _read(root: Y, r: Reader, path: Path, shown: str) -> Knowledge | None:
    if not r.is_map(root, "a knowledge file"):
        return None
    r.check_keys(root, KNOWLEDGE_KEYS, "the knowledge file")
    version_node = root.get("version")
    if version_node is None:
        r.error(root, "missing required key 'version' at the top of the knowledge file (write 'version: 1')")
    elif r.integer(version_node, "'version'", 1, 1) != 1:
        r.error(version_node, "unsupported knowledge file version; this ivr reads version 1")
    threshold_node = root.get("threshold")
    threshold = r.number(threshold_node, "'threshold'", DEFAULT_THRESHOLD)
    if threshold > 1.0:
        r.error(threshold_node, f"'threshold' is a confidence between 0 and 1, got {threshold:g}")
    entries_node = root.get("entries")
    entries: dict[str, KnowledgeEntry] = {}
    if entries_node is None:
        r.error(root, "missing 'entries': give each answer a name with its 'questions' and 'answer'")
    elif r.is_map(entries_node, "'entries'"):
        if not entries_node.entries:
            r.error(entries_node, "'entries' is empty; add at least one question and answer")
        seen: dict[str, tuple[str, Y]] = {}
        for name, (key_node, value) in entries_node.entries.items():
            entry = _entry(r, name, key_node, value, seen)
            if entry is not None:
                entries[name] = entry
    knowledge = Knowledge(shown, path.resolve(), entries, threshold)
    knowledge.exact = {normalize_utterance(q): e.name for e in entries.values() for q in e.questions}
    return knowledge


def _entry(r: Reader, name: str, key_node: Y, value: Y, seen: dict[str, tuple[str, Y]]) -> KnowledgeEntry | None:
    if not IDENTIFIER.match(name):
        r.error(key_node, f"entry name '{name}' must be made of letters, digits and '_'")
    if not r.is_map(value, f"entry '{name}'"):
        return None
    r.check_keys(value, ENTRY_KEYS, f"entry '{name}'")
    questions_node = value.get("questions")
    questions: list[str] = []
    if questions_node is None:
        r.error(key_node, f"entry '{name}' has no 'questions'; list 3 to 10 ways callers ask it")
    elif questions_node.kind == "seq" and not questions_node.items:
        r.error(questions_node, f"entry '{name}' has an empty 'questions' list; list 3 to 10 ways callers ask it")
    else:
        for item, text in r.string_list(questions_node, f"'questions' of '{name}'"):
            key = normalize_utterance(text)
            if not key:
                r.error(item, f"question {text!r} of '{name}' has no words")
                continue
            if key in seen:
                other, at = seen[key]
                where = "this entry" if other == name else f"entry '{other}'"
                r.error(item, f"duplicate question {text!r}: already asked in {where} (line {at.line}); "
                              "keep it in one entry only")
                continue
            seen[key] = (name, item)
            questions.append(text.strip())
    answer_node = value.get("answer")
    answer: Template | None = None
    if answer_node is None:
        r.error(key_node, f"entry '{name}' has no 'answer': write what the bot says to these questions")
    else:
        said = r.string(answer_node, f"the answer of '{name}'")
        if said is not None:
            try:
                answer = compile_template(said.strip())
            except TemplateProblem as exc:
                r.error(answer_node, f"bad template in the answer of '{name}': {exc}")
    follow_node = value.get("follow_up")
    follow_up = r.string(follow_node, f"'follow_up' of '{name}'")
    if answer is None or not questions:
        return None
    follow_at = (follow_node.line, follow_node.col) if follow_node is not None else (0, 0)
    return KnowledgeEntry(name, key_node.line, key_node.col, tuple(questions), answer, follow_up, follow_at,
                          (answer_node.line, answer_node.col) if answer_node is not None else (0, 0))


def looks_like_knowledge(root: Y | None) -> bool:
    """Whether a parsed YAML file is a knowledge file rather than a flow (it has 'entries', no 'nodes')."""
    return root is not None and root.kind == "map" and "entries" in root.entries and "nodes" not in root.entries
