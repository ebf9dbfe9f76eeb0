"""Turn a tagged Python function into a `NodeSpec`: the signature *is* the node's schema.

Inputs are the function's parameters (annotations give port types, `Annotated[..., Field(...)]`
gives ranges and descriptions, defaults make inputs optional). Outputs are the return annotation:
a `typing.NamedTuple` declares several named outputs, anything else one output called `out`.
A parameter annotated with `NodeContext` receives the run's services and is not an input.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import TypeAdapter
from pydantic.fields import FieldInfo

NODE_MARK = "__nodegraph_node__"
SINGLE_OUTPUT = "out"
# Semantic Versioning 2.0.0 (semver.org): MAJOR.MINOR.PATCH, optional -prerelease and +build.
SEMVER = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
                    r"(?:-[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?")


class _Missing:
    def __repr__(self) -> str:
        return "<required>"


MISSING: Any = _Missing()


@dataclass(frozen=True)
class NodeMark:
    """What `@node` attaches to a function; the registry turns it into a `NodeSpec`."""

    type_name: str
    version: str
    deterministic: bool
    side_effects: bool
    facts: Callable[..., Any] | None = None


def node(
    type_name: str,
    *,
    version: str = "1.0.0",
    deterministic: bool = True,
    side_effects: bool = False,
    facts: Callable[..., Any] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Tag a function as a node type. Tagging only: registering is the registry's job.

    `deterministic=False` marks nodes whose output may differ between calls with equal inputs;
    they are never cached. `side_effects=True` marks nodes that write files: they always run.
    `facts`: a light function run at validation time (nodegraph.document.facts) that tells facts
    about the node's outputs and refuses inputs that do not belong together.
    """

    def mark(func: Callable[..., Any]) -> Callable[..., Any]:
        setattr(func, NODE_MARK, NodeMark(type_name, version, deterministic, side_effects, facts))
        return func

    return mark


@dataclass(frozen=True)
class InputSpec:
    name: str
    annotation: Any
    port_type: Any  # the type a link must fit (element type for list inputs)
    is_list: bool
    optional: bool  # None is an accepted value
    default: Any
    description: str
    literal_adapter: TypeAdapter[Any] | None = field(default=None, compare=False, repr=False)

    @property
    def required(self) -> bool:
        return self.default is MISSING


@dataclass(frozen=True)
class OutputSpec:
    name: str
    type: Any


@dataclass(frozen=True)
class NodeSpec:
    type_name: str
    version: str
    description: str
    doc: str
    deterministic: bool
    side_effects: bool
    inputs: dict[str, InputSpec]
    outputs: dict[str, OutputSpec]
    func: Callable[..., Any] = field(compare=False, repr=False)
    context_param: str | None = None
    multi_output: bool = False
    pack: str = ""
    facts: Callable[..., Any] | None = field(default=None, compare=False, repr=False)

    @property
    def cacheable(self) -> bool:
        return self.deterministic and not self.side_effects

    def validate_literal(self, name: str, value: Any) -> Any:
        """Validate one literal input with pydantic; raises `pydantic.ValidationError`."""
        spec = self.inputs[name]
        if spec.literal_adapter is None:
            raise TypeError(f"input '{name}' of type {type_name_of(spec.annotation)} cannot be a literal")
        return spec.literal_adapter.validate_python(value)

    def call(self, context: Any, inputs: dict[str, Any]) -> dict[str, Any]:
        """Run the function and return its outputs by name."""
        kwargs = dict(inputs)
        if self.context_param:
            kwargs[self.context_param] = context
        result = self.func(**kwargs)
        if not self.multi_output:
            return {SINGLE_OUTPUT: result}
        return dict(result._asdict())


def type_name_of(tp: Any) -> str:
    """A short readable name for an annotation, for messages and `nodegraph nodes`."""
    if tp is Any:
        return "Any"
    if get_origin(tp) is Annotated:
        return type_name_of(get_args(tp)[0])
    if isinstance(tp, type) and not get_args(tp):
        return tp.__name__
    text = repr(tp).replace("typing.", "")
    for mod in ("pathlib.", "builtins."):
        text = text.replace(mod, "")
    return text


def _strip_annotated(tp: Any) -> tuple[Any, list[Any]]:
    if get_origin(tp) is Annotated:
        base, *meta = get_args(tp)
        return base, meta
    return tp, []


def _split_optional(tp: Any) -> tuple[Any, bool]:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) < len(get_args(tp)):
            inner = args[0] if len(args) == 1 else Union[tuple(args)]  # noqa: UP007
            return inner, True
    return tp, False


def _is_literal_capable(tp: Any) -> bool:
    """Whether pydantic can validate a literal for this annotation (plain data, not a port object)."""
    try:
        TypeAdapter(tp).json_schema()
    except Exception:  # noqa: BLE001 - pydantic raises several kinds for arbitrary classes
        return False
    return True


def _description(meta: list[Any]) -> str:
    for item in meta:
        if isinstance(item, FieldInfo) and item.description:
            return item.description
        if isinstance(item, str):
            return item
    return ""


def build_spec(func: Callable[..., Any], context_type: type) -> NodeSpec:
    """Read a tagged function's signature into a `NodeSpec`; raises TypeError on a bad declaration."""
    mark: NodeMark = getattr(func, NODE_MARK)
    hints = typing.get_type_hints(func, include_extras=True)
    sig = inspect.signature(func)
    inputs: dict[str, InputSpec] = {}
    context_param = None
    for name, param in sig.parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"{mark.type_name}: *args/**kwargs are not allowed in a node signature")
        if name not in hints:
            raise TypeError(f"{mark.type_name}: input '{name}' has no type annotation")
        annotation = hints[name]
        if annotation is context_type:
            context_param = name
            continue
        base, meta = _strip_annotated(annotation)
        inner, optional = _split_optional(base)
        is_list = get_origin(inner) in (list, tuple) and bool(get_args(inner))
        port_type = get_args(inner)[0] if is_list else inner
        default = MISSING if param.default is inspect.Parameter.empty else param.default
        adapter = TypeAdapter(annotation) if _is_literal_capable(annotation) else None
        inputs[name] = InputSpec(
            name=name,
            annotation=annotation,
            port_type=port_type,
            is_list=is_list,
            optional=optional,
            default=default,
            description=_description(meta),
            literal_adapter=adapter,
        )
    ret = hints.get("return", Any)
    multi = isinstance(ret, type) and issubclass(ret, tuple) and hasattr(ret, "_fields")
    if multi:
        out_hints = typing.get_type_hints(ret)
        outputs = {n: OutputSpec(n, out_hints.get(n, Any)) for n in ret._fields}
    else:
        outputs = {SINGLE_OUTPUT: OutputSpec(SINGLE_OUTPUT, ret)}
    doc = inspect.cleandoc(func.__doc__ or "")
    return NodeSpec(
        type_name=mark.type_name,
        version=mark.version,
        description=doc.splitlines()[0] if doc else "",
        doc=doc,
        deterministic=mark.deterministic,
        side_effects=mark.side_effects,
        inputs=inputs,
        outputs=outputs,
        func=func,
        context_param=context_param,
        multi_output=multi,
        facts=mark.facts,
    )


def check_declaration(spec: NodeSpec) -> None:
    """Refuse a node that breaks the rules every cache key and help page relies on; raises TypeError.

    The version is part of every cache key, so it must say what kind of change happened (semver);
    the docstring's first line is the node's description in `nodegraph nodes`. The registry calls
    this for every node, so a pack breaking either rule is left out whole and reported.
    """
    if not isinstance(spec.version, str) or not SEMVER.fullmatch(spec.version):
        raise TypeError(f"{spec.type_name}: version {spec.version!r} is not a semantic version "
                        "MAJOR.MINOR.PATCH like '1.0.0'")
    if not spec.description.strip():
        raise TypeError(f"{spec.type_name}: no docstring (its first line is the node's description "
                        "in `nodegraph nodes`)")


def fits(out_type: Any, in_type: Any) -> bool:
    """Whether a value of `out_type` may flow into an input of `in_type`.

    Follows subclassing, plus the documented conversions: int -> float, anything -> Any,
    X -> Optional[X] / Union[..., X, ...].
    """
    if in_type is Any or out_type is Any:
        return True
    out_type, _ = _strip_annotated(out_type)
    in_type, _ = _strip_annotated(in_type)
    if get_origin(in_type) in (Union, types.UnionType):
        return any(fits(out_type, member) for member in get_args(in_type))
    if get_origin(out_type) in (Union, types.UnionType):
        return all(fits(member, in_type) for member in get_args(out_type))
    if in_type is float and out_type is int:
        return True
    if isinstance(out_type, type) and isinstance(in_type, type):
        return issubclass(out_type, in_type)
    return bool(out_type == in_type)
