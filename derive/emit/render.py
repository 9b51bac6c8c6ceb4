"""The Jinja2 environment: logic-free templates, found in the installed package too."""
from __future__ import annotations

from functools import lru_cache, reduce
from importlib import resources

import jinja2


def make_environment(loader: jinja2.BaseLoader) -> jinja2.Environment:
    """Our settings: undefined names are errors, blocks leave no stray whitespace."""
    return jinja2.Environment(
        loader=loader, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
        keep_trailing_newline=True, autoescape=False,
    )


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    folder = resources.files("derive.templates")
    # "latex/table.tex.j2" is found in the subfolder latex/ of the templates
    return make_environment(jinja2.FunctionLoader(
        lambda name: reduce(lambda f, part: f.joinpath(part), name.split("/"), folder).read_text("utf-8")))


def render(template: str, view: dict) -> str:
    return environment().get_template(template).render(**view)
