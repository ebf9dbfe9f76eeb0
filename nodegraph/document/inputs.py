"""Check one node's inputs against its spec: literals through pydantic, links and params recognised.

Links are only collected here (as `LinkRef`s); whether their targets exist and their types fit is
decided in `links.py` once every node is known.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Union

from pydantic import ValidationError

from nodegraph.document.refs import BadRef, LinkRef, ParamRef, read_ref, unescape, with_article
from nodegraph.nodes.spec import InputSpec, NodeSpec, type_name_of

Report = Callable[[str, str | None], None]  # (message, field)
_UNSET: Any = object()


@dataclass
class NodeDraft:
    """What the node check found: validated literals and the links still to resolve."""

    literals: dict[str, Any] = field(default_factory=dict)
    links: dict[str, LinkRef | list[LinkRef]] = field(default_factory=dict)
    as_text: set[str] = field(default_factory=set)  # overridden inputs that validated as plain --set text


def container_type(spec: InputSpec) -> Any:
    """The input's annotation without `Annotated` metadata and `Optional` (`list[str]` for list inputs)."""
    tp = spec.annotation
    if typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) in (Union, types.UnionType):
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(members) == 1:
            tp = members[0]
    return tp


def accepts_literal(ispec: InputSpec) -> bool:
    """Whether a literal may feed this input.

    Port types declared as dataclasses (Image, Latents, model handles) are link-only even though
    pydantic could build one from a mapping: a literal `{pixels: 3}` would only fail at run time.
    """
    if ispec.literal_adapter is None:
        return False
    tp = ispec.port_type
    members = typing.get_args(tp) if typing.get_origin(tp) in (Union, types.UnionType) else (tp,)
    return not any(isinstance(m, type) and dataclasses.is_dataclass(m) for m in members)


def pydantic_message(exc: ValidationError) -> str:
    """The short form of a pydantic error: the messages (with their position in a list), no repr."""
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err.get("loc", ()))
        text = err.get("msg", "invalid value").removeprefix("Value error, ")
        parts.append(f"item {loc}: {text}" if loc else text)
    more = len(exc.errors()) - 3
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_node_inputs(
    spec: NodeSpec,
    body: Mapping[str, Any],
    params: Mapping[str, Any],
    declared: Collection[str],
    raw_text: Mapping[str, str],
    report: Report,
) -> NodeDraft:
    """Check a node body (minus `type`) against `spec`.

    `params` holds the usable param values, `declared` every declared param (a declared param
    without a usable value was reported already). `raw_text` holds the `--set` text of overridden
    inputs, tried as plain text when its YAML reading does not validate.
    """
    draft = NodeDraft()
    for name, value in body.items():
        if name == "type":
            continue
        ispec = spec.inputs.get(name)
        if ispec is None:
            close = difflib.get_close_matches(name, list(spec.inputs), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            names = ", ".join(spec.inputs) or "none"
            report(f"unknown input '{name}' ({hint}inputs of {spec.type_name}: {names})", name)
            continue
        _check_value(spec, ispec, value, params, declared, raw_text.get(name), report, draft)
    for name, ispec in spec.inputs.items():
        if name in body:
            continue
        if ispec.required:
            report(f"missing required input '{name}' ({type_name_of(container_type(ispec))}: "
                   f"{ispec.description or 'no description'})", name)
        else:
            draft.literals[name] = ispec.default
    return draft


def _check_value(
    spec: NodeSpec,
    ispec: InputSpec,
    value: Any,
    params: Mapping[str, Any],
    declared: Collection[str],
    raw_text: str | None,
    report: Report,
    draft: NodeDraft,
) -> None:
    name = ispec.name
    ref = read_ref(value)
    if isinstance(ref, LinkRef):
        draft.links[name] = ref
        return
    if isinstance(value, list) and value and all(isinstance(read_ref(v), LinkRef) for v in value):
        if not ispec.is_list:
            report(f"takes a single {type_name_of(ispec.port_type)}: a list of links fits only list inputs",
                   name)
            return
        draft.links[name] = [typing.cast(LinkRef, read_ref(v)) for v in value]
        return
    literal = _substitute(value, params, declared, name, report)
    if literal is _UNSET:
        return
    _validate_literal(spec, ispec, literal, raw_text, report, draft)


def _substitute(value: Any, params: Mapping[str, Any], declared: Collection[str], name: str,
                report: Report) -> Any:
    """Replace `$param` (whole value or list item) and unescape `@@`/`$$`; _UNSET after a problem."""
    if isinstance(value, list):
        items = [_substitute_one(v, params, declared, name, report, in_list=True) for v in value]
        return _UNSET if any(i is _UNSET for i in items) else items
    return _substitute_one(value, params, declared, name, report, in_list=False)


def _substitute_one(value: Any, params: Mapping[str, Any], declared: Collection[str], name: str,
                    report: Report, *, in_list: bool) -> Any:
    ref = read_ref(value)
    if ref is None:
        return unescape(value)
    if isinstance(ref, BadRef):
        report(ref.message, name)
        return _UNSET
    if isinstance(ref, LinkRef):
        report(f"mixes links and literal values ('{ref.text}'); a list must be all links or all literals",
               name)
        return _UNSET
    assert isinstance(ref, ParamRef)
    if ref.name not in declared:
        close = difflib.get_close_matches(ref.name, sorted(declared), n=1)
        hint = f"did you mean '${close[0]}'? " if close else ""
        known = ", ".join(sorted(declared)) or "none declared"
        report(f"'${ref.name}' is not a declared param ({hint}params: {known})", name)
        return _UNSET
    if ref.name not in params:
        return _UNSET  # declared without a usable value: reported on the param
    return params[ref.name]


def _validate_literal(spec: NodeSpec, ispec: InputSpec, literal: Any, raw_text: str | None,
                      report: Report, draft: NodeDraft) -> None:
    name = ispec.name
    if not accepts_literal(ispec):
        if literal is None and ispec.optional:
            draft.literals[name] = None
            return
        report(f"expects a link to {with_article(type_name_of(ispec.port_type))} output (like '@node'), "
               f"not the literal {_short(literal)}", name)
        return
    try:
        draft.literals[name] = spec.validate_literal(name, literal)
        return
    except (ValidationError, ValueError, TypeError, OverflowError) as exc:
        error = exc
    if raw_text is not None and raw_text != literal:
        try:
            draft.literals[name] = spec.validate_literal(name, raw_text)
            draft.as_text.add(name)
            return
        except (ValidationError, ValueError, TypeError, OverflowError):
            pass
    message = pydantic_message(error) if isinstance(error, ValidationError) else str(error)
    report(f"{message} (got {_short(literal)})", name)
