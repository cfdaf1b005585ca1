"""Config models that report every problem of a file at once.

pydantic collects the field errors of a whole document, but a model's cross-field validators run
only once all its fields are valid, and stop at the first that fails: a file took as many
``check-config`` rounds as it had layers of problems. Here cross-field rules are ``@check``
methods, which ``StrictModel`` runs itself: all of them, each failure reported, and also when
some fields failed, on a partial model holding the fields that did validate (list items one by
one); a check that reads a failed field is skipped, as it has nothing true to say yet.
"""

from __future__ import annotations

import contextlib
from types import UnionType
from typing import Annotated, Any, Callable, ClassVar, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from qtelemetry import extras

M = TypeVar("M", bound="StrictModel")
Check = TypeVar("Check", bound=Callable[..., Any])


class FieldError(ValueError):
    """A check's problem that belongs to one field: the error names ``field`` (dotted, relative to
    the model), not just the model."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def check(method: Check) -> Check:
    """Mark a ``StrictModel`` method as a cross-field rule: it raises ``FieldError`` (or
    ``ValueError``) when the model breaks it; every rule of a model runs, whatever the others find."""
    method.__config_check__ = True  # type: ignore[attr-defined]
    return method


def _problem(exc: ValueError, data: Any) -> InitErrorDetails:
    """A check's failure as pydantic reports a validator's (the caller adds a FieldError's field)."""
    return {"type": "value_error", "loc": (), "input": data, "ctx": {"error": exc}}


def _again(error: Any) -> InitErrorDetails:
    """A collected pydantic error, to raise again with more: a validator's keeps its exception (a
    FieldError names a field), any other its type and message as they were."""
    if error["type"] == "value_error":
        return {"type": "value_error", "loc": error["loc"], "input": error["input"], "ctx": error["ctx"]}
    return {"type": PydanticCustomError(error["type"], error["msg"]), "loc": error["loc"], "input": error["input"]}


class StrictModel(BaseModel):
    """Config model that rejects unknown keys (a typo is an error, not a silent default) and
    non-finite numbers (``.inf``, ``.nan``, ``1e999``), which no field means; its ``@check`` rules
    all run (see the module)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    #: (extra, modules) a section of this kind needs installed: without them it is an error naming
    #: the extra, and nothing else of the section is validated
    requires: ClassVar[tuple[str, tuple[str, ...]] | None] = None
    _checks: ClassVar[tuple[Callable[[Any], Any], ...]] = ()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        found: dict[str, Callable[[Any], Any]] = {}
        for klass in reversed(cls.__mro__):
            found.update((name, value) for name, value in vars(klass).items()
                         if getattr(value, "__config_check__", False))
        cls._checks = tuple(found.values())

    @model_validator(mode="wrap")
    @classmethod
    def _every_problem(cls, data: Any, handler: Callable[[Any], Any], info: ValidationInfo) -> Any:
        if isinstance(data, cls) or not (cls._checks or cls.requires):  # nothing of its own to check (a
            return handler(data)  # parent builds a partial one if it needs it), or already validated
        if cls.requires is not None:
            extra, modules = cls.requires
            try:
                extras.check_installed(modules, extra)
            except extras.MissingExtra as exc:
                cause = FieldError("type", str(exc)) if "type" in cls.model_fields else ValueError(str(exc))
                raise ValidationError.from_exception_data(cls.__name__, [_problem(cause, data)]) from None
        try:
            model, failure, errors = handler(data), None, []
        except ValidationError as exc:
            failure, errors = exc, exc.errors()
            model = cls._partial(data, errors, info.context)
        problems = []
        for rule in cls._checks if model is not None else ():
            try:
                rule(model)
            except AttributeError:
                if failure is None:
                    raise
            except ValueError as exc:
                problems.append(_problem(exc, data))
        if failure is not None and not problems:
            raise failure
        if problems:
            raise ValidationError.from_exception_data(cls.__name__, [*map(_again, errors), *problems])
        return model

    @classmethod
    def _partial(cls: type[M], data: Any, errors: list[Any], context: Any) -> M | None:
        """The model with the fields of ``data`` that validate (defaults for those not given), the
        failed ones absent, a failed model field (or list item) partial in turn; None if ``data`` is
        not a mapping. Errors of the model itself (a check) leave every field."""
        if not isinstance(data, dict):
            return None
        failed = {error["loc"][0] for error in errors if error["loc"]}
        model = cls.model_construct()
        vars(model).clear()
        for name, field in cls.model_fields.items():
            key = field.alias or name  # as the document spells it, and pydantic's errors
            if key not in data:
                if not field.is_required():
                    vars(model)[name] = field.get_default(call_default_factory=True)
            elif key not in failed:
                with contextlib.suppress(ValidationError):  # not validated before: the model stopped first
                    cls.__pydantic_validator__.validate_assignment(model, name, data[key], context=context)
            elif get_origin(field.annotation) is list and isinstance(data[key], list):
                [item] = get_args(field.annotation)
                vars(model)[name] = [_partial_value(item, value, context) for value in data[key]]
            elif (partial := _partial_value(field.annotation, data[key], context)) is not _NOTHING:
                vars(model)[name] = partial
        return model



#: What a partial model holds where nothing validated: every attribute is missing.
_NOTHING = object()


def _partial_value(annotation: Any, value: Any, context: Any) -> Any:
    """``value`` validated as the model ``annotation`` names (the model, an optional one, or the
    member of a union that ``value``'s ``type`` tag picks): the model, a partial one, or _NOTHING."""
    models = [m for m in _members(annotation) if isinstance(m, type) and issubclass(m, StrictModel)]
    tag = value.get("type") if isinstance(value, dict) else None
    if len(models) > 1:  # a union of driver kinds, told apart by their Literal ``type``
        models = [m for m in models if "type" in m.model_fields and tag in get_args(m.model_fields["type"].annotation)]
    if len(models) != 1:
        return _NOTHING
    try:
        return models[0].model_validate(value, context=context)
    except ValidationError as exc:
        partial = models[0]._partial(value, exc.errors(), context)
        return _NOTHING if partial is None else partial


def _members(annotation: Any) -> list[Any]:
    """The types an annotation admits: ``Annotated`` unwrapped, unions and optionals flattened."""
    if get_origin(annotation) is Annotated:
        return _members(get_args(annotation)[0])
    if get_origin(annotation) in (Union, UnionType):
        return [member for arg in get_args(annotation) for member in _members(arg)]
    return [annotation]
