"""The plugin contract, checked when a plugin loads: every declaration it returns is the right kind of object and
says something the core can use. A plugin that fails a check is marked broken with the first problem found, so
that a typo fails at load with the plugin's name, not deep inside a later conversion."""
from __future__ import annotations

import re
from typing import Any, Iterable

from hub.declarations import OPTION_TYPES, Backend, Environment, Format, Option, Request, Step, Target, Tolerance
from hub.states import STATE_ATTRIBUTES, Requirement

REFERENCE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
REQUEST_ATTRIBUTES = ("traits", "precision")


class ContractError(ValueError):
    """One declaration breaks the contract; the message names it and says what is wrong."""


def check_declarations(formats: Iterable[Any], steps: Iterable[Any], backends: Iterable[Any],
                       targets: Iterable[Any], environments: Iterable[Any]) -> None:
    """Raise ContractError for the first declaration that breaks the contract."""
    for kind, items, expected, check in [
        ("format", formats, Format, _check_format),
        ("step", steps, Step, _check_step),
        ("backend", backends, Backend, _check_backend),
        ("target", targets, Target, _check_target),
        ("environment", environments, Environment, _check_environment),
    ]:
        for item in items:
            if not isinstance(item, expected):
                raise ContractError(f"a {kind} hook returned {type(item).__name__} {item!r}, not a "
                                    f"hub.declarations.{expected.__name__}")
            if not isinstance(item.name, str) or not item.name:
                raise ContractError(f"a {kind} has no name: {item!r}")
            try:
                check(item)
            except ContractError as error:
                raise ContractError(f"{kind} {item.name!r}: {error}") from None


def check_reference(field: str, value: Any, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not REFERENCE.match(value):
        raise ContractError(f"{field} {value!r} is not a reference of the form 'package.module:function'")


def _check_strings(field: str, values: Any) -> None:
    if not isinstance(values, (tuple, list, frozenset, set)) or not all(isinstance(v, str) for v in values):
        raise ContractError(f"{field} must be a tuple of strings, not {values!r}")


def _check_format(declared: Format) -> None:
    check_reference("detect", declared.detect)
    check_reference("describe", declared.describe, optional=True)
    check_reference("save_object", declared.save_object, optional=True)
    _check_strings("requires", declared.requires)
    _check_strings("extensions", declared.extensions)


def _check_step(step: Step) -> None:
    check_reference("run", step.run)
    if not isinstance(step.accepts, Requirement):
        raise ContractError(f"accepts must be a hub.states.Requirement, not {step.accepts!r}")
    unknown = [key for key in step.produces if key not in STATE_ATTRIBUTES]
    if unknown:
        raise ContractError(f"produces unknown state attribute(s) {', '.join(map(repr, unknown))}; state "
                            f"attributes: {', '.join(STATE_ATTRIBUTES)}")
    if not all(isinstance(value, str) for value in step.produces.values()):
        raise ContractError(f"produces values must be strings: {dict(step.produces)!r}")
    for field in ("seconds", "seconds_per_mb", "fidelity_loss", "size_ratio"):
        if not isinstance(getattr(step, field), (int, float)) or getattr(step, field) < 0:
            raise ContractError(f"{field} must be a number >= 0, not {getattr(step, field)!r}")
    _check_strings("requires", step.requires)
    _check_options(step.options)
    budget = step.option(step.time_budget_option) if step.time_budget_option else None
    if step.time_budget_option and (budget is None or budget.type not in (int, float)):
        raise ContractError(f"time_budget_option {step.time_budget_option!r} is not one of its int or float options")
    if not isinstance(step.satisfies, tuple):
        raise ContractError(f"satisfies must be a tuple of hub.declarations.Request, not {step.satisfies!r}")
    for request in step.satisfies:
        _check_request(step, request)


def _check_options(options: Any) -> None:
    if not isinstance(options, tuple) or not all(isinstance(o, Option) for o in options):
        raise ContractError(f"options must be a tuple of hub.declarations.Option, not {options!r}")
    names = [o.name for o in options]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ContractError(f"declares option(s) {', '.join(repeated)} more than once")
    for option in options:
        if not isinstance(option.name, str) or not option.name.isidentifier():
            raise ContractError(f"option name {option.name!r} is not an identifier")
        if option.type not in OPTION_TYPES:
            raise ContractError(f"option {option.name}: type {option.type!r} is not one of "
                                f"{', '.join(t.__name__ for t in OPTION_TYPES)}")
        if option.path and option.type is not str:
            raise ContractError(f"option {option.name}: a path option must have type str")
        if option.between is not None and option.type not in (int, float):
            raise ContractError(f"option {option.name}: `between` applies to int and float options only")
        if option.default is not None and not option.path and not _fits(option):
            raise ContractError(f"option {option.name}: default {option.default!r} is not a "
                                f"{option.type.__name__}")


def _fits(option: Option) -> bool:
    if option.type is float:
        return isinstance(option.default, (int, float)) and not isinstance(option.default, bool)
    if option.type is int:
        return isinstance(option.default, int) and not isinstance(option.default, bool)
    return isinstance(option.default, option.type)


def _check_request(step: Step, request: Any) -> None:
    if not isinstance(request, Request):
        raise ContractError(f"satisfies holds {request!r}, not a hub.declarations.Request")
    if not request.name or not re.fullmatch(r"[a-z0-9][a-z0-9-]*", request.name):
        raise ContractError(f"request name {request.name!r}: use lower-case letters, digits and '-'")
    if request.attribute not in REQUEST_ATTRIBUTES:
        raise ContractError(f"request {request.name}: attribute {request.attribute!r} is not one of "
                            f"{', '.join(REQUEST_ATTRIBUTES)}")
    produced = step.produced(request.attribute)
    if request.value not in produced:
        raise ContractError(f"request {request.name} asks for {request.attribute} {request.value!r}, which the "
                            "step does not produce")
    if request.option is not None:
        if request.attribute != "traits":
            raise ContractError(f"request {request.name}: only a traits request takes a value (option)")
        if step.option(request.option) is None:
            raise ContractError(f"request {request.name} sets option {request.option!r}, which the step does "
                                "not declare")


def _check_backend(backend: Backend) -> None:
    check_reference("run", backend.run)
    for field in ("latency", "prepare", "prepared"):
        check_reference(field, getattr(backend, field), optional=True)
    _check_strings("formats", backend.formats)
    _check_strings("requires", backend.requires)


def _check_target(target: Target) -> None:
    if not isinstance(target.backend, str) or not target.backend:
        raise ContractError(f"backend must be a backend's name, not {target.backend!r}")
    if not isinstance(target.requires, Requirement):
        raise ContractError(f"requires must be a hub.states.Requirement, not {target.requires!r}")
    if not isinstance(target.tolerance, Tolerance):
        raise ContractError(f"tolerance must be a hub.declarations.Tolerance, not {target.tolerance!r}")


def _check_environment(environment: Environment) -> None:
    _check_strings("requirements", environment.requirements)


def request_conflict(known: Request, other: Request) -> str | None:
    """Why two declarations of one request name cannot both stand (None when they agree)."""
    if (known.attribute, known.value, known.option) == (other.attribute, other.value, other.option):
        return None
    return (f"request {other.name!r} means {other.attribute} {other.value!r} (option {other.option}) here but "
            f"{known.attribute} {known.value!r} (option {known.option}) elsewhere")
