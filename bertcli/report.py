"""Evaluation reports: console table, Markdown, JUnit XML, metrics.json, predictions, GLUE submission files.

Everything here is plain Python over `EvalResult`s (no torch), so reports are cheap to build and to test.
One row per model: several `--model` values on the same data give one comparison table.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import bertcli
from bertcli import __version__
from bertcli.errors import UsageError
from bertcli.gates import GateResult
from bertcli.outputs import atomic_file, write_json

# GLUE server file names. MNLI's matched and mismatched test sets are two files; the split decides which.
SUBMISSION_FILES = {
    "cola": "CoLA.tsv",
    "sst2": "SST-2.tsv",
    "mrpc": "MRPC.tsv",
    "qqp": "QQP.tsv",
    "stsb": "STS-B.tsv",
    "mnli_matched": "MNLI-m.tsv",
    "mnli_mismatched": "MNLI-mm.tsv",
    "qnli": "QNLI.tsv",
    "rte": "RTE.tsv",
    "wnli": "WNLI.tsv",
    "ax": "AX.tsv",
}
LIBRARIES = [
    "torch",
    "transformers",
    "tokenizers",
    "datasets",
    "accelerate",
    "evaluate",
    "scikit-learn",
    "scipy",
]


@dataclass
class EvalResult:
    """One model's evaluation. Predictions are in file order: class ids (or scores for regression)."""

    model: str
    task: str
    metrics: dict[str, float]
    examples: int
    runtime: dict[str, float] = field(default_factory=dict)
    label_names: list[str] | None = None  # class names in id order; None for regression and pretraining
    index: list[str] | None = None
    predictions: list | None = None
    probabilities: list[list[float]] | None = None
    references: list | None = None
    engine: str = "torch"  # what ran the model (model.runtime): torch or onnx
    precision: str = "fp32"  # model.precision: fp32 or int8


@dataclass
class Floor:
    """The floor row of a comparison (`TaskFamily.floor`): a classical model fitted on `train_file`, scored on the
    same examples; each model's row says how far it is above it on `metric`. Gates never read it."""

    result: EvalResult  # its model: the floor's name
    metric: str  # the main metric the models are compared on
    train_file: str

    def above(self, result: EvalResult) -> float:
        """How far `result` is above the floor on `metric` (nan where either lacks it)."""
        return result.metrics.get(self.metric, math.nan) - self.result.metrics.get(self.metric, math.nan)


# --- numbers ------------------------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def _json_number(value: float) -> float | None:
    return None if isinstance(value, float) and (math.isnan(value) or math.isinf(value)) else value


def metric_names(results: list[EvalResult]) -> list[str]:
    """Every metric of the results in first-seen order (the task's order). Per-type scores of a tagging task
    (`PER/f1`) stay out of the tables, which show the overall ones; metrics.json keeps them all."""
    names: list[str] = []
    for result in results:
        names.extend(n for n in result.metrics if n not in names and "/" not in n)
    return names


# --- tables -------------------------------------------------------------------------------------------------


def _rows(results: list[EvalResult], floor: Floor | None = None) -> tuple[list[str], list[list[str]]]:
    names = metric_names(results)
    above = [f"above floor ({floor.metric})"] if floor else []
    engines = any((r.engine, r.precision) != ("torch", "fp32") for r in results)  # else the column says nothing
    header = ["model", *(["runtime"] if engines else []), *names, *above, "examples", "seconds"]

    def row(r: EvalResult, gap: list[str], engine: str) -> list[str]:
        metrics = [_fmt(r.metrics.get(n, math.nan)) for n in names]
        return [r.model, *([engine] if engines else []), *metrics, *gap, str(r.examples),
                f"{r.runtime.get('total_s', 0):.2f}"]  # fmt: skip

    rows = [row(r, [_signed(floor.above(r))] if floor else [], f"{r.engine} {r.precision}") for r in results]
    if floor:
        rows.append(row(floor.result, [""], ""))  # the floor last: the line every model is read against
    return header, rows


def _signed(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:+.4f}"


def _gate_rows(gates: list[GateResult], several_models: bool) -> tuple[list[str], list[list[str]]]:
    header = ["gate", *(["model"] if several_models else []), "value", "result"]
    rows = [
        [g.gate.name, *([g.model] if several_models else []), _fmt(g.value), "pass" if g.passed else "FAIL"]
        for g in gates
    ]
    return header, rows


def _aligned(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    table = [header, *rows]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _pipe(header: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    align = ["---"] + ["---:" if h not in ("gate", "model", "result", "runtime") else "---" for h in header[1:]]
    return "\n".join([line(header), "| " + " | ".join(align) + " |", *(line(r) for r in rows)])


def console_table(results: list[EvalResult], gates: list[GateResult] | None = None, floor: Floor | None = None) -> str:
    """Metrics as an aligned text table (one row per model, then the floor's), then the gates if any."""
    several = len({r.model for r in results}) > 1
    text = f"task: {results[0].task}\n" + _aligned(*_rows(results, floor))
    if gates:
        text += "\n\n" + _aligned(*_gate_rows(gates, several))
    return text + "\n"


def markdown_report(
    results: list[EvalResult], gates: list[GateResult] | None = None, floor: Floor | None = None
) -> str:
    """A Markdown summary (for a CI job summary or a pull-request comment): a metrics table, a gates table."""
    several = len({r.model for r in results}) > 1
    text = f"### bertcli eval: {results[0].task}\n\n" + _pipe(*_rows(results, floor)) + "\n"
    if gates:
        failed = sum(not g.passed for g in gates)
        verdict = "all gates passed" if not failed else f"{failed} of {len(gates)} gates failed"
        text += f"\n**{verdict}**\n\n" + _pipe(*_gate_rows(gates, several)) + "\n"
    return text


def junit_report(results: list[EvalResult], gates: list[GateResult] | None = None, floor: Floor | None = None) -> str:
    """JUnit XML: a testsuite per model holding one testcase per gate (failed gates carry a <failure>), and
    the metrics as properties, so CI test views show each gate and its numbers. The floor is a suite without
    test cases (no gate reads it); each model's suite has its distance above the floor as a property."""
    gates = gates or []
    suites = ET.Element("testsuites", name="bertcli eval")
    total = failures = 0
    for result in results:
        mine = [g for g in gates if g.model == result.model]
        failed = [g for g in mine if not g.passed]
        total, failures = total + len(mine), failures + len(failed)
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=result.model,
            tests=str(len(mine)),
            failures=str(len(failed)),
            errors="0",
            time=f"{result.runtime.get('total_s', 0):.3f}",
        )
        props = ET.SubElement(suite, "properties")
        ET.SubElement(props, "property", name="task", value=result.task)
        ET.SubElement(props, "property", name="examples", value=str(result.examples))
        ET.SubElement(props, "property", name="runtime", value=result.engine)
        ET.SubElement(props, "property", name="precision", value=result.precision)
        for name, value in result.metrics.items():
            ET.SubElement(props, "property", name=name, value=repr(value))  # full precision for tools
        if floor:
            ET.SubElement(props, "property", name=f"above_floor/{floor.metric}", value=repr(floor.above(result)))
        for gate in mine:
            case = ET.SubElement(suite, "testcase", classname=f"bertcli.eval.{result.task}", name=gate.gate.name)
            case.set("time", "0")
            if not gate.passed:
                ET.SubElement(case, "failure", message=gate.describe(), type="GateFailure").text = gate.describe()
    if floor:
        _floor_suite(suites, floor)
    suites.set("tests", str(total))
    suites.set("failures", str(failures))
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def _floor_suite(suites: ET.Element, floor: Floor) -> None:
    r = floor.result
    suite = ET.SubElement(suites, "testsuite", name=r.model, tests="0", failures="0", errors="0",
                          time=f"{r.runtime.get('total_s', 0):.3f}")  # fmt: skip
    props = ET.SubElement(suite, "properties")
    for name, value in {"floor": "true", "train_file": floor.train_file, "examples": str(r.examples)}.items():
        ET.SubElement(props, "property", name=name, value=value)
    for name, value in r.metrics.items():
        ET.SubElement(props, "property", name=name, value=repr(value))


def render(
    fmt: str,
    results: list[EvalResult],
    gates: list[GateResult] | None = None,
    data: dict[str, Any] | None = None,
    processes: int = 1,
    floor: Floor | None = None,
) -> str:
    """The report in `fmt`: table, markdown, junit or json (the content of metrics.json)."""
    if fmt == "markdown":
        return markdown_report(results, gates, floor)
    if fmt == "junit":
        return junit_report(results, gates, floor)
    if fmt == "json":
        return json.dumps(metrics_document(results, data, gates, processes, floor), indent=2) + "\n"
    return console_table(results, gates, floor)


# --- metrics.json -------------------------------------------------------------------------------------------


def library_versions() -> dict[str, str]:
    """Versions of Python, bertcli and the libraries behind the numbers (from metadata: nothing imported)."""
    out = {"python": platform.python_version(), "bertcli": __version__}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def file_sha256(path: Path | str) -> str:
    """sha256 of a file, or of a folder's files (relative paths and contents, in sorted order)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _result_entry(result: EvalResult) -> dict[str, Any]:
    return {
        "model": result.model,
        "metrics": {k: _json_number(v) for k, v in result.metrics.items()},
        "examples": result.examples,
        "runtime": result.engine,  # what ran the model, and at which precision
        "precision": result.precision,
        "runtime_s": {k: round(v, 4) for k, v in result.runtime.items()},
    }


def metrics_document(
    results: list[EvalResult],
    data: dict[str, Any] | None,
    gates: list[GateResult] | None = None,
    processes: int = 1,
    floor: Floor | None = None,
) -> dict[str, Any]:
    """The content of metrics.json. One model: its model/metrics/examples/runtime_s at the top level (so the
    file serves as a `--baseline`); several: a "results" list, one entry per model. With a floor: its entry under
    "floor", and each model's "above_floor" {metric: distance}."""
    doc: dict[str, Any] = {"task": results[0].task, "data": data}
    entries = [_result_entry(r) for r in results]
    if floor:
        for entry, r in zip(entries, results):
            entry["above_floor"] = {floor.metric: _json_number(floor.above(r))}
    if len(results) == 1:
        doc.update(entries[0])
    else:
        doc["results"] = entries
    if floor:
        doc["floor"] = {**_result_entry(floor.result), "metric": floor.metric, "train_file": floor.train_file}
    doc["gates"] = [
        {
            "model": g.model,
            "metric": g.gate.metric,
            "bound": g.gate.bound,
            "value": _json_number(g.value),
            "passed": g.passed,
            "source": g.gate.source,
        }
        for g in gates or []
    ]
    doc["processes"] = processes  # > 1 under accelerate launch / torchrun
    # the whole command so far (start-up, reading, every model): what a CI job waits for, where runtime_s is each
    # model's share
    doc["command_s"] = round(time.perf_counter() - bertcli.STARTED, 4)
    doc["versions"] = library_versions()
    doc["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return doc


def write_metrics(
    path: Path,
    results: list[EvalResult],
    data: dict[str, Any],
    gates: list[GateResult],
    processes: int = 1,
    floor: Floor | None = None,
) -> None:
    write_json(path, metrics_document(results, data, gates, processes, floor))


# --- predictions and GLUE submissions -----------------------------------------------------------------------


def _clean(text: str) -> str:
    return text.replace("\t", " ").replace("\n", " ")


def write_predictions(path: Path, result: EvalResult) -> None:
    """A TSV, one row per example in file order: index, prediction (class id or score), label (its name),
    one probability column per class (prob_<name>), and the reference when the data had labels."""
    names = result.label_names
    header = ["index", "prediction"] + (["label"] + [f"prob_{_clean(n)}" for n in names] if names else [])
    if result.references is not None:
        header.append("reference")
    with atomic_file(path) as handle:
        handle.write("\t".join(header) + "\n")
        for i, pred in enumerate(result.predictions or []):
            row = [_clean(str(result.index[i]) if result.index else str(i))]
            if names:
                row += [str(pred), _clean(names[pred]), *(f"{p:.6f}" for p in result.probabilities[i])]
            else:
                row.append(f"{pred:.6f}")
            if result.references is not None:
                ref = result.references[i]
                row.append(_clean(names[ref]) if names else f"{ref:.6f}")
            handle.write("\t".join(row) + "\n")


def submission_name(task: str, data_path: Path | str | None = None) -> str:
    """The GLUE server's file name for `task`; MNLI's is picked by the data file (…mismatched… -> MNLI-mm)."""
    key = task.lower().replace("-", "").replace("_", "")
    if key.startswith("mnli"):
        mismatched = "mismatched" in key or key == "mnlimm" or "mismatched" in Path(str(data_path or "")).name.lower()
        key = "mnli_mismatched" if mismatched else "mnli_matched"
    if key not in SUBMISSION_FILES:
        raise UsageError(f"task '{task}' is not a GLUE task; GLUE submission files exist for {_glue_names()}")
    return SUBMISSION_FILES[key]


def _glue_names() -> str:
    return ", ".join(sorted({k.split("_")[0] for k in SUBMISSION_FILES}))


def write_submission(path: Path, predictions: list, index: list[str] | None, label_values: list[str] | None) -> None:
    """A GLUE submission file: header `index<TAB>prediction`, one row per test example in file order.
    Classes are written as the task's files write labels (CoLA 0/1, MNLI entailment/...); STS-B scores are
    clipped to 0-5 (the range GLUE accepts) with three decimals."""
    with atomic_file(path) as handle:
        handle.write("index\tprediction\n")
        for i, pred in enumerate(predictions):
            value = f"{min(5.0, max(0.0, float(pred))):.3f}" if label_values is None else label_values[pred]
            handle.write(f"{index[i] if index else i}\t{value}\n")
