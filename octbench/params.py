"""Parameter declaration and validation for techniques, in one place.

A technique declares its parameters as a pydantic model named ``Params``; ``validate_params`` turns a suite's raw
mapping into that model and turns pydantic's errors into one sentence that names the technique, the parameter,
the rule and the value given.
"""

import difflib
import re
import reprlib
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

from octbench.errors import PluginError


class StrictModel(BaseModel):
    """Unknown keys are errors, values are immutable once validated, numbers are finite, and a YAML ``true`` is not
    taken for the number 1."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name in cls.model_fields:
            annotation = cls.model_fields[info.field_name].annotation
            choices = typing.get_args(annotation) or (annotation,)
            if bool not in choices and any(c in (int, float) for c in choices):
                raise ValueError(f"should be a number, not {str(value).lower()}")
        return value


class Params(StrictModel):
    """Base for a technique's parameters: unknown keys are errors, values are immutable once validated."""


def validate_params(params_model: type[BaseModel], technique: str, raw: dict[str, Any]) -> BaseModel:
    try:
        return params_model.model_validate(raw)
    except ValidationError as exc:
        raise PluginError(describe_param_error(params_model, technique, exc)) from None


def describe_param_error(params_model: type[BaseModel], technique: str, exc: ValidationError) -> str:
    err = exc.errors()[0]
    known = list(params_model.model_fields)
    if not err["loc"]:  # a model validator: a rule across parameters, which pydantic does not attach to one
        return _describe_cross_field(technique, known, err)
    param = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        hint = closest_hint(param, known)
        listed = ", ".join(known) if known else "none"
        return f"{technique} has no parameter '{param}'{hint}. Its parameters are: {listed}."
    rule = err["msg"].replace("Input should be", "must be").replace("Value error, ", "")
    if err["type"] == "missing":
        return f"The '{param}' parameter of {technique} is required."
    if err["type"] == "value_error":
        return f"The '{param}' parameter of {technique} is invalid: {rule}. Got {shown(err['input'])}."
    return f"The '{param}' parameter of {technique} {rule}. Got {shown(err['input'])} instead."


def _describe_cross_field(technique: str, known: list[str], err: dict[str, Any]) -> str:
    """'The 'low' and 'high' parameters of percentile-clip are invalid together: low must be below high. Got
    low=60, high=40.' The parameters named are those the rule's message mentions, else every one given."""
    rule = err["msg"].replace("Value error, ", "").replace("Assertion failed, ", "")
    given = err["input"] if isinstance(err["input"], dict) else {}
    named = [k for k in known if re.search(rf"(?<![\w-]){re.escape(k)}(?![\w-])", rule)] or [
        k for k in known if k in given
    ]
    if not named:
        return f"The parameters of {technique} are invalid together: {rule}. Got {shown(err['input'])}."
    listed = " and ".join(", ".join(f"'{k}'" for k in named).rsplit(", ", 1))
    values = ", ".join(f"{k}={shown(given[k])}" for k in named if k in given)
    got = f" Got {values}." if values else ""
    noun = "parameter" if len(named) == 1 else "parameters"
    together = "" if len(named) == 1 else " together"
    return f"The {listed} {noun} of {technique} {'is' if len(named) == 1 else 'are'} invalid{together}: {rule}.{got}"


_SHOWN = reprlib.Repr()
_SHOWN.maxstring = _SHOWN.maxother = 80
_SHOWN.maxlist = _SHOWN.maxdict = 6
_SHOWN.maxlevel = 3


def shown(value: Any) -> str:
    """A value as an error message shows it: ``repr``, cut short (a YAML alias bomb must not become 300 MB of text)."""
    return _SHOWN.repr(value)


def describe_params(params_model: type[BaseModel]) -> list[dict[str, Any]]:
    """Name, type, default and description of each parameter, for `octbench plugins`."""
    rows = []
    for name, field in params_model.model_fields.items():
        annotation = getattr(field.annotation, "__name__", None) or str(field.annotation)
        constraints = [str(m) for m in field.metadata]
        rows.append(
            {
                "name": name,
                "type": annotation.replace("typing.", ""),
                "default": None if field.is_required() else field.get_default(call_default_factory=True),
                "required": field.is_required(),
                "constraints": constraints,
                "description": field.description or "",
            }
        )
    return rows


def closest_hint(word: str, choices: list[str]) -> str:
    match = difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
    prefixed = [c for c in choices if c.startswith(word) or word.startswith(c)]
    best = match[0] if match else (prefixed[0] if prefixed else None)
    return f" (did you mean '{best}'?)" if best else ""
