"""Griffe extension for the API pages: the docstrings' reST roles become mkdocstrings cross-references.

The code's docstrings use reST roles (``:class:`Trainer```, ``:meth:`~zoo.train.Trainer.fit```,
``:func:``, ``:mod:``, ``:data:``, ``:attr:``), which read well in ``help()`` but would show literally
on the site. When mkdocstrings loads a module, this extension rewrites each role into an autorefs
link (``<autoref identifier="zoo.train.Trainer.fit" optional>``): the name is resolved in the scope
of the object that holds the docstring (its module's imports and members), a leading ``~`` shows only
the last component, and a target that is not on the API pages renders as plain code instead of
failing the strict build. A paragraph ending in ``::`` (a reST literal block follows) ends in ``:``.

Enabled in ``mkdocs.yml`` (``plugins: mkdocstrings: handlers: python: options: extensions``).
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(class|meth|func|mod|data|attr|exc|obj|const):`(~?)([^`<]+?)(?:\s*<([^>`]+)>)?`")
LITERAL_INTRO = re.compile(r"(?m)^([ \t]*)(.*?\S)?::[ \t]*$")


def resolve(obj: Any, target: str) -> str:
    """The full dotted path of ``target`` as seen from ``obj`` (unchanged when it cannot be resolved)."""
    target = target.lstrip(".")
    head, _, rest = target.partition(".")
    scope = obj
    while scope is not None:
        try:
            full = scope.resolve(head)
        except Exception:  # griffe's NameResolutionError, or an alias that cannot be followed
            scope = scope.parent
            continue
        return f"{full}.{rest}" if rest else full
    return target


def convert(text: str, obj: Any) -> str:
    """``text`` with every role replaced by an optional cross-reference and ``::`` by ``:``."""

    def role(m: re.Match) -> str:
        _, tilde, first, explicit = m.groups()
        target = (explicit or first).strip()
        if explicit:
            shown = first.strip()
        elif tilde:
            shown = target.rsplit(".", 1)[-1]
        else:
            shown = target
        identifier = html.escape(resolve(obj, target), quote=True)
        return f'<autoref identifier="{identifier}" optional><code>{html.escape(shown)}</code></autoref>'

    def literal(m: re.Match) -> str:
        indent, lead = m.group(1), m.group(2)
        return f"{indent}{lead}:" if lead else ""

    return LITERAL_INTRO.sub(literal, ROLE.sub(role, text))


class RstRoles(griffe.Extension):
    """Rewrite reST roles in every docstring of the loaded packages (see the module docstring)."""

    def on_object(self, *, obj: Any, **kwargs: Any) -> None:
        docstring = getattr(obj, "docstring", None)
        if docstring is not None and docstring.value:
            docstring.value = convert(docstring.value, obj)
