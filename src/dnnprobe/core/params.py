"""params.yaml: read it, apply ``key.path=value`` overrides, and validate it before any work.

Every value a stage uses comes from here, so a typo or an out-of-range value fails at once with the
key path in the message (``params.yaml: probe.C must be > 0, got -1``), not half way through a run.
Each pipeline part owns its section of the file as a frozen dataclass in ``<part>/params.py`` (its
fields, types, defaults and checks are the parameters, its ``SECTION`` the key it sits under; ``""``:
top-level keys); :func:`schema` composes the sections a stage reads, so a stage depends on this loader
and its own sections only. The ``params`` stage composes them all and refuses unknown keys.

The file is read as DVC reads it (ruamel.yaml, YAML 1.2), so that dnnprobe, MLflow, ``dvc.lock`` and
``dvc exp show`` see the same values: ``010`` is 10 (8 in PyYAML's YAML 1.1), ``1:30`` the string
"1:30" (90), ``1e-3`` a number (a string), ``yes`` a string (true).
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import field
from pathlib import Path
from typing import Any, Callable

from ruamel.yaml import YAML, YAMLError

from dnnprobe.core.errors import DnnprobeError, missing_file_hint


def check(condition: Callable[[Any], bool], requirement: str) -> Callable[[Any], str | None]:
    """A field check: returns the requirement it breaks, or None."""
    return lambda value: None if condition(value) else requirement


def positive(value: Any) -> bool:
    return value > 0


def one_of(choices: tuple[str, ...]) -> Callable[[Any], str | None]:
    return check(lambda v: v in choices, "must be one of " + ", ".join(choices))


def device_choice(pattern: str) -> Callable[[Any], str | None]:
    """The check of a device field: auto, cpu, or an accelerator name that `pattern` (a regex) matches."""
    return check(lambda v: re.fullmatch(f"auto|cpu|{pattern}", v) is not None,
                 "must be auto, cpu, cuda or cuda:N (N without leading zeros)")  # torch refuses cuda:01


def checked(default: Any, check: Callable[[Any], str | None] | None = None, **kw: Any) -> Any:
    """A dataclass field whose value `check` accepts (returns None) or refuses (returns the requirement)."""
    return field(default=default, metadata={"check": check}, **kw)


def flat(self: Any, sections: tuple[str, ...] = ()) -> dict[str, Any]:
    """Parameters as ``{"probe.C": 1.0, ...}``, the form MLflow and DVC show: all of them, or only
    the top-level keys and sections named in `sections` (e.g. a stage's params in dvc.yaml)."""
    return {key: value for key, value in flatten(dataclasses.asdict(self)).items()
            if not sections or key.split(".")[0] in sections}


def schema(*sections: type) -> type:
    """The frozen dataclass ``Params`` of a params file made of `sections`, in the order given: each
    section's fields under its ``SECTION`` key (``params.probe.C``), a top-level section's
    (``SECTION == ""``) at the top (``params.pca``); with a :func:`flat` method."""
    fields: list[tuple[str, Any, Any]] = []
    for section in sections:
        if section.SECTION:
            fields.append((section.SECTION, section, field(default_factory=section)))
            continue
        hints = typing.get_type_hints(section)
        fields += [(f.name, hints[f.name], field(default=f.default, default_factory=f.default_factory,
                                                 metadata=f.metadata)) for f in dataclasses.fields(section)]
    return dataclasses.make_dataclass("Params", fields, frozen=True, namespace={"flat": flat})


def comparable(value: Any) -> str:
    """A parameter value as a string that compares like-for-like: ``-S probe.C=1`` gives 1 where
    params.yaml has 1.0, the same setting."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return repr(float(value)) if is_number else repr(value)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"probe": {"C": 1}}`` -> ``{"probe.C": 1}``; tuples become lists."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return flat


def _type_name(kind: Any) -> str:
    names = {int: "an integer", float: "a finite number", str: "a string", bool: "true or false"}
    return names.get(kind, "a list of integers" if kind == tuple[int, ...] else "a list of strings")


def boolean_in(value: Any) -> bool:
    """Whether `value`, or an item of a list `value`, is a boolean."""
    return isinstance(value, bool) or (isinstance(value, (list, tuple)) and any(isinstance(v, bool) for v in value))


def yaml_text(value: Any) -> str:
    """`value` as params.yaml spells it: true / false, [0.1, true]."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(yaml_text(v) for v in value) + "]"
    return repr(value)


def coerce(value: Any, kind: Any, where: str) -> Any:
    """Check one leaf value against its declared type; ints are accepted where floats are.

    A boolean where a number belongs (``C: true``: YAML reads true, yes and on as booleans) is named as one."""
    if kind in (int, float, tuple[int, ...]) and boolean_in(value):
        raise DnnprobeError(f"{where} must be {_type_name(kind)}, not a boolean: got {yaml_text(value)}")
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        value = float(value) if ok else value
    elif kind is str:
        ok = isinstance(value, str)
    elif kind == tuple[int, ...]:
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        value = tuple(value) if ok else value
    else:  # tuple[str, ...]
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
        value = tuple(value) if ok else value
    if not ok:
        raise DnnprobeError(f"{where} must be {_type_name(kind)}, got {value!r}")
    return value


def _build(cls: type, data: Any, source: str, prefix: str = "", every_key: bool = True) -> Any:
    """`cls` from `data`; a key `cls` does not know is refused (`every_key`) or left to the sections that own it."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise DnnprobeError(f"{source}: {prefix.rstrip('.') or 'the file'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown and every_key:
        raise DnnprobeError(
            f"{source}: unknown key {prefix}{unknown[0]} (known: {', '.join(sorted(fields))})"
        )
    values = {}
    for name, spec in fields.items():
        where = f"{source}: {prefix}{name}"
        if name not in data:
            continue
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            values[name] = _build(kind, data[name], source, f"{prefix}{name}.")
            continue
        convert = spec.metadata.get("coerce")
        value = convert(data[name], where) if convert else coerce(data[name], kind, where)
        check = spec.metadata.get("check")
        problem = check(value) if check else None
        if problem:
            raise DnnprobeError(f"{where} {problem}, got {value!r}")
        values[name] = value
    return cls(**values)


def read_yaml(text: str) -> Any:
    """YAML text as DVC reads params.yaml: ruamel.yaml's safe loader (YAML 1.2), what
    ``dvc.utils.serialize.parse_yaml`` uses. Raises ruamel.yaml's YAMLError."""
    return YAML(typ="safe").load(text)


def _yaml_problem(exc: Exception) -> str:
    """``, line 3, column 5: not valid YAML (did not find expected ...)``: one line, where the loader gives several."""
    mark = getattr(exc, "problem_mark", None)
    where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
    return f"{where}: not valid YAML ({problem})"


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``probe.C=0.5`` into (["probe", "C"], 0.5); the value is read as YAML, as params.yaml is.

    A value YAML cannot read (``@lab``, a backtick, a tab) is refused in one line saying how to quote it.
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise DnnprobeError(f"override {text!r} must look like key.path=value")
    try:
        value = read_yaml(raw) if raw.strip() else ""
    except YAMLError as exc:
        quoted = "'" + raw.replace("'", "''") + "'"
        raise DnnprobeError(f"--set {text!r}{_yaml_problem(exc)}; to pass it as text, quote the value in YAML: "
                            f"{key.strip()}={quoted}") from None
    return key.strip().split("."), value


def load(params_schema: type, path: str | Path = "params.yaml", overrides: tuple[str, ...] = (),
         every_key: bool = False) -> Any:
    """Read a params file and validate the sections of `params_schema` (a :func:`schema`); `overrides`
    are ``key.path=value`` strings applied first. Top-level keys of other sections are left alone unless
    `every_key` (the params stage, which checks the whole file).

    Raises DnnprobeError (one line) when the file is missing, is not valid YAML, or any value is out
    of its range. A missing file is an error, never a silent run on the built-in defaults.
    """
    path = Path(path)
    if path.is_dir():
        raise DnnprobeError(f"{path}: is a folder, not a parameter file")
    try:
        data = read_yaml(path.read_text())
    except FileNotFoundError:
        raise DnnprobeError(f"{path}: parameter file not found{missing_file_hint()}") from None
    except YAMLError as exc:
        raise DnnprobeError(f"{path}{_yaml_problem(exc)}") from None
    data = data or {}
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise DnnprobeError(f"override {text!r}: {key} is not a section")
        node[keys[-1]] = value
    return _build(params_schema, data, str(path), every_key=every_key)
