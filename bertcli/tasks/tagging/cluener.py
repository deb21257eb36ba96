"""CLUENER's span labels as character tags: `{"type": {"entity": [[start, end], ...]}}` (end inclusive) checked
against the text, spans inside other spans resolved by a policy (`task.nested`), the rest tagged in the scheme.

    spans = label_spans(path, line, text, record["label"])
    kept = resolve_nested(path, line, spans, "outer")       # len(spans) - len(kept) were dropped
    tags = span_tags(len(text), kept, "iob2")
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bertcli.errors import UsageError

NESTED_POLICIES = ("outer", "inner", "error")  # spans inside other spans: keep which, or refuse the file


@dataclass(frozen=True)
class Span:
    start: int
    end: int  # inclusive, as CLUENER writes it
    kind: str
    entity: str

    def __str__(self) -> str:
        return f"[{self.start}, {self.end}] of {self.kind} {self.entity!r}"


def label_spans(path: Path, line: int, text: str, label) -> list[Span]:
    """Every span of a CLUENER record's `label` ({type: {entity: [[start, end], ...]}}), checked against the text."""
    if not isinstance(label, dict):
        raise UsageError(f"{path}:{line}: 'label' is not an object of types")
    out = []
    for kind, entities in label.items():
        for entity, spans in (entities or {}).items():
            for span in spans:
                start, end = span
                if not (0 <= start <= end < len(text)) or text[start : end + 1] != entity:
                    raise UsageError(f"{path}:{line}: span {span} of {kind} {entity!r} does not point at that text")
                out.append(Span(start, end, kind, entity))
    return out


def resolve_nested(path: Path, line: int, spans: list[Span], policy: str) -> list[Span]:
    """The spans one tag per character can hold. `outer` keeps a span unless it overlaps one kept before it, going
    from the left and longest first (a span inside another goes; of two that cross, the later); `inner` goes
    shortest first (a span holding another goes; of two that cross, the longer); `error` refuses the record."""
    order = sorted(spans, key=lambda s: (s.start, s.start - s.end))  # by start, the longest first
    if policy == "inner":
        order = sorted(spans, key=lambda s: (s.end - s.start, s.start))
    kept, covered = [], set()
    for span in order:
        chars = set(range(span.start, span.end + 1))
        if covered & chars:
            if policy == "error":
                other = next(k for k in kept if k.start <= span.end and span.start <= k.end)
                raise UsageError(f"{path}:{line}: span {span} overlaps {other}; set task.nested outer (keep the outer "
                                 "span) or inner (keep the inner ones)")  # fmt: skip
            continue
        kept.append(span)
        covered |= chars
    return sorted(kept, key=lambda s: s.start)


def span_tags(length: int, spans: list[Span], scheme: str) -> list[str]:
    """Character tags of non-overlapping spans sorted by start: in that order an IOB1 entity right after one of
    its type gets its B-, however the file listed them."""
    tags = ["O"] * length
    for span in spans:
        touching = span.start > 0 and tags[span.start - 1][2:] == span.kind  # B-/I-/E-/S- and its type
        tags[span.start : span.end + 1] = _entity_tags(span.end - span.start + 1, span.kind, scheme, touching)
    return tags


def _entity_tags(n: int, kind: str, scheme: str, touching: bool) -> list[str]:
    if scheme == "bioes":
        return [f"S-{kind}"] if n == 1 else [f"B-{kind}", *[f"I-{kind}"] * (n - 2), f"E-{kind}"]
    first = "I" if scheme == "iob1" and not touching else "B"
    return [f"{first}-{kind}", *[f"I-{kind}"] * (n - 1)]
