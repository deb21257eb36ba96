"""Task name -> task family. Each module of FAMILY_MODULES defines `FAMILY`, one `TaskFamily` instance; the modules
are imported and registered on the first look-up (their imports cost start-up time a `bertcli --help` should not
pay). The family modules do not import this one: the dependency runs one way.

Adding a family: its folder `bertcli/tasks/<family>/` with `family.py` defining `FAMILY`, and that module in
FAMILY_MODULES. `register` adds a family from elsewhere (a test, a plugin)."""

from __future__ import annotations

import importlib

from bertcli.tasks.base import TaskFamily

# The modules that register a family. The first is the default: task names no family claims go to it (GLUE tasks
# and `custom` are classification's; its spec builder says what an unknown name is).
FAMILY_MODULES = (
    "bertcli.tasks.classification.family",
    "bertcli.tasks.tagging.family",
    "bertcli.tasks.span.family",
    "bertcli.tasks.multiple_choice.family",
)
DEFAULT_FAMILY = "classification"

_FAMILIES: dict[str, TaskFamily] = {}
_loaded = False  # whether FAMILY_MODULES have been imported and registered


def register(family: TaskFamily) -> TaskFamily:
    """Make `family` known by its name and its task names (a later family of the same name replaces it)."""
    _FAMILIES[family.name] = family
    return family


def families() -> list[TaskFamily]:
    """Every family: those of FAMILY_MODULES (in that order; imported once, on the first call), and any other that
    was registered."""
    global _loaded
    if not _loaded:
        for module in FAMILY_MODULES:
            family = importlib.import_module(module).FAMILY
            _FAMILIES.setdefault(family.name, family)  # one registered earlier under that name stays
        _loaded = True
    return list(_FAMILIES.values())


def family_for(task_name: str) -> TaskFamily:
    """The family that serves task `task_name` (as written: finetune passes cfg.task.name, eval its lower case);
    a name no family claims is the default family's, whose spec builder reports it as unknown."""
    for family in families():
        if task_name in family.task_names:
            return family
    return _FAMILIES[DEFAULT_FAMILY]


def family_of(spec) -> TaskFamily:
    """The family of a task spec (its `family`)."""
    families()
    return _FAMILIES[spec.family]


def load_classifier(model_dir, spec, classifier_dropout: float | None = None):
    """(model, LoadReport): the checkpoint with a fresh head for `spec`, built by the spec's family."""
    return family_of(spec).build_model(model_dir, spec, classifier_dropout)


def family_of_model(raw: dict) -> TaskFamily | None:
    """The family whose head a model's config.json names (an architecture ending as the family's auto_class does:
    BertForTokenClassification, AutoModelForTokenClassification), or None."""
    for family in families():
        head = family.auto_class.removeprefix("AutoModel")
        if head and any(a.endswith(head) for a in raw.get("architectures") or []):
            return family
    return None
