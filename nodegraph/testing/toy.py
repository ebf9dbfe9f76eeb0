"""A toy pack of small nodes that need no torch models, for fast and isolated engine tests.

Each call of `toy_module` makes fresh node functions reporting to a `CallCounter`, so a test can
assert exactly which nodes re-ran. The registry is built from an explicit pack source, never from
the installed entry points.
"""

from __future__ import annotations

from collections import Counter
from types import ModuleType
from typing import Annotated, NamedTuple

from pydantic import Field

from nodegraph.api import InputError, NodeContext, OutputFile, PackRegistrar, hookimpl, node
from nodegraph.nodes.registry import PackSource, Registry, build_registry, entry_point_sources

DEFAULT_TEXT_FILE = OutputFile("out.txt")


class Animal:
    """Toy port type; `Dog` fits an `Animal` input, not the reverse."""

    def __init__(self, name: str) -> None:
        self.name = name


class Dog(Animal):
    pass


class CallCounter:
    """Counts executions per node type, so tests can assert exactly what re-ran."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()


class Pair(NamedTuple):
    low: float
    high: float


def toy_module(counter: CallCounter) -> ModuleType:
    """A fresh module of toy nodes reporting to `counter`."""

    @node("toy.number", version="1.0.0")
    def number(value: Annotated[float, Field(description="A number")]) -> float:
        """Emit a number."""
        counter.calls["toy.number"] += 1
        return value

    @node("toy.add", version="1.0.0")
    def add(
        a: Annotated[float, Field(description="First term")],
        b: Annotated[float, Field(description="Second term")] = 0.0,
    ) -> float:
        """Add two numbers."""
        counter.calls["toy.add"] += 1
        return a + b

    @node("toy.sum", version="1.0.0")
    def total(values: Annotated[list[float], Field(description="Numbers to add")]) -> float:
        """Add a list of numbers."""
        counter.calls["toy.sum"] += 1
        return float(sum(values))

    @node("toy.scale", version="1.0.0")
    def scale(
        x: Annotated[float, Field(description="Value")],
        factor: Annotated[int, Field(ge=-100, le=100, description="Integer factor")] = 2,
    ) -> float:
        """Multiply by a small integer factor."""
        counter.calls["toy.scale"] += 1
        return x * factor

    @node("toy.split", version="1.0.0")
    def split(x: Annotated[float, Field(description="Value")]) -> Pair:
        """Two outputs: x-1 and x+1."""
        counter.calls["toy.split"] += 1
        return Pair(x - 1, x + 1)

    @node("toy.format", version="1.0.0")
    def fmt(
        value: Annotated[float, Field(description="Value")],
        template: Annotated[str, Field(description="Python format string with {}")] = "{}",
    ) -> str:
        """Format a number as text."""
        counter.calls["toy.format"] += 1
        return template.format(value)

    @node("toy.dog", version="1.0.0")
    def dog(name: Annotated[str, Field(description="Name")]) -> Dog:
        """Make a dog."""
        counter.calls["toy.dog"] += 1
        return Dog(name)

    @node("toy.animal", version="1.0.0")
    def animal(name: Annotated[str, Field(description="Name")]) -> Animal:
        """Make an animal."""
        counter.calls["toy.animal"] += 1
        return Animal(name)

    @node("toy.greet_dog", version="1.0.0")
    def greet_dog(pet: Annotated[Dog, Field(description="A dog")]) -> str:
        """Greet a dog (an Animal input does not fit)."""
        counter.calls["toy.greet_dog"] += 1
        return f"good dog, {pet.name}"

    @node("toy.greet", version="1.0.0")
    def greet(pet: Annotated[Animal, Field(description="Any animal")]) -> str:
        """Greet an animal."""
        counter.calls["toy.greet"] += 1
        return f"hello, {pet.name}"

    @node("toy.random", version="1.0.0", deterministic=False)
    def random_value(seed: Annotated[int, Field(description="Ignored; never cached")] = 0) -> float:
        """A non-deterministic node: never cached."""
        counter.calls["toy.random"] += 1
        return float(counter.calls["toy.random"])

    @node("toy.fail", version="1.0.0")
    def fail(x: Annotated[float, Field(description="Value")] = 0.0) -> float:
        """Always fails with a user-facing error naming its input."""
        counter.calls["toy.fail"] += 1
        raise InputError(f"cannot use {x}", field="x")

    @node("toy.write_text", version="1.0.0", side_effects=True)
    def write_text(
        ctx: NodeContext,
        text: Annotated[str, Field(description="Text to write")],
        path: Annotated[OutputFile, Field(description="File inside the output folder")] = DEFAULT_TEXT_FILE,
    ) -> str:
        """Write a text file into the output folder."""
        counter.calls["toy.write_text"] += 1
        target = ctx.output_path(path)
        target.write_text(text)
        return str(path)

    module = ModuleType("nodegraph_toy_nodes")
    for func in (number, add, total, scale, split, fmt, dog, animal, greet_dog, greet, random_value,
                 fail, write_text):
        func.__module__ = module.__name__
        setattr(module, func.__name__, func)
    return module


class ToyPack:
    """A plugin object registering the toy nodes, as an entry point's target would."""

    def __init__(self, module: ModuleType) -> None:
        self.module = module

    @hookimpl
    def nodegraph_register(self, registry: PackRegistrar) -> None:
        registry.add_module(self.module)


def toy_registry(counter: CallCounter | None = None, *, with_installed: bool = False) -> Registry:
    """A registry with the toy pack (and optionally every installed pack)."""
    module = toy_module(counter or CallCounter())
    sources = [PackSource("toy", "1.0.0", "nodegraph.testing", lambda: ToyPack(module))]
    if with_installed:
        sources = sorted(entry_point_sources() + sources, key=lambda s: s.name)
    return build_registry(sources)
