"""Jinja2 templates and expressions of a flow: the shared sandbox, and static analysis.

Flows use ``{{ expr }}`` in text and bare expressions in ``when:``, ``set:`` and ``match:``.
Checks only parse them (no code generation): which names, attributes, filters and tests they
use, and any syntax error with its line inside the template.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template, nodes
from jinja2.exceptions import TemplateSyntaxError
from jinja2.parser import Parser
from jinja2.runtime import Context, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

# Every attribute a plain dict has (its type's and object's): nothing else is one of its
# attributes, so any other name read with a dot is an item, as the sandbox would find it.
_DICT_ATTRIBUTES = frozenset(dir(dict))


class _FlowTemplate(Template):
    """A template whose globals are copied into each render's context from one flat dict.

    Jinja keeps a template's globals as a ChainMap (the template's over the environment's) and
    copies it key by key at every render: 3.5 of a 6 us branch condition. The flow environment's
    globals are never changed once it is made, so the flat copy is taken once.
    """

    def new_context(
        self, vars: dict[str, Any] | None = None, shared: bool = False,
        locals: Mapping[str, Any] | None = None,
    ) -> Context:  # fmt: skip
        if shared or locals:
            return super().new_context(vars, shared, locals)
        flat: dict[str, Any] | None = self.__dict__.get("_flat_globals")
        if flat is None:
            flat = self.__dict__["_flat_globals"] = dict(self.globals)
        parent = {**flat, **vars} if vars else dict(flat)
        return self.environment.context_class(
            self.environment, parent, self.name, self.blocks, globals=flat
        )


class FlowEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox with flat globals (:class:`_FlowTemplate`) and a direct read of a plain
    dict's items (``key.digits``): the sandbox first tries the attribute, which raises."""

    template_class = _FlowTemplate

    def getattr(self, obj: Any, attribute: str) -> Any | Undefined:
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)


@cache
def environment() -> ImmutableSandboxedEnvironment:
    """The one sandboxed Jinja2 environment flows are parsed and rendered with.

    Immutable sandbox: templates cannot call methods that modify lists or dicts; StrictUndefined:
    a missing variable is an error, never silently empty text spoken to a caller. Its globals
    must not change once it is made (templates keep a flat copy of them).
    """
    return FlowEnvironment(undefined=StrictUndefined, autoescape=False)


@dataclass(frozen=True, slots=True)
class Usage:
    """What one template or expression reads."""

    names: frozenset[str] = frozenset()
    attributes: tuple[tuple[str, str], ...] = ()  # (variable, attribute) for var.attr / var['attr']
    bare: frozenset[str] = frozenset()  # names also used whole, not only as var.attr
    filters: tuple[str, ...] = ()
    tests: tuple[str, ...] = ()
    constant: bool = True  # no {{ }}, {% %}: the text is used as it is


@dataclass(frozen=True, slots=True)
class Problem:
    """A syntax error: the message and the 1-based line inside the template."""

    message: str
    line: int = 1


@lru_cache(maxsize=4096)
def analyze_template(source: str) -> Usage | Problem:
    """Parses ``{{ }}`` text and returns what it reads, or its syntax error."""
    if "{" not in source:
        return Usage()
    try:
        tree = environment().parse(source)
    except TemplateSyntaxError as exc:
        return Problem(exc.message or "syntax error", exc.lineno or 1)
    return _usage(tree, constant=_is_plain(tree))


@lru_cache(maxsize=4096)
def analyze_expression(source: str) -> Usage | Problem:
    """Parses a bare expression (no ``{{ }}``) and returns what it reads, or its syntax error."""
    if "{{" in source or "{%" in source:
        return Problem("write the expression without {{ }} or {% %}")
    env = environment()
    try:
        parser = Parser(env, source, state="variable")
        expr = parser.parse_expression()
        if not parser.stream.eos:
            token = parser.stream.current
            return Problem(f"unexpected '{token.value}' after the expression", token.lineno)
    except TemplateSyntaxError as exc:
        message = (exc.message or "syntax error").replace(
            "end of template", "end of the expression"
        )
        return Problem(message, exc.lineno or 1)
    return _usage(nodes.Template([nodes.Output([expr])]), constant=False)


def _is_plain(tree: nodes.Template) -> bool:
    return all(
        isinstance(out, nodes.Output) and all(isinstance(n, nodes.TemplateData) for n in out.nodes)
        for out in tree.body
    )


def _usage(tree: nodes.Template, constant: bool) -> Usage:
    stored = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    loaded = {n.name for n in tree.find_all(nodes.Name) if n.ctx == "load"} - stored
    attributes: list[tuple[str, str]] = []
    accessed: set[int] = set()
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        assert isinstance(node, nodes.Getattr | nodes.Getitem)
        target = node.node
        if not isinstance(target, nodes.Name) or target.name in stored:
            continue
        if isinstance(node, nodes.Getattr):
            attributes.append((target.name, node.attr))
            accessed.add(id(target))
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            attributes.append((target.name, node.arg.value))
            accessed.add(id(target))
    bare = {n.name for n in tree.find_all(nodes.Name) if n.ctx == "load" and id(n) not in accessed}
    return Usage(
        names=frozenset(loaded),
        attributes=tuple(attributes),
        filters=tuple(f.name for f in tree.find_all(nodes.Filter)),
        tests=tuple(t.name for t in tree.find_all(nodes.Test)),
        constant=constant,
        bare=frozenset(bare - stored),
    )
