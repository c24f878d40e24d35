"""One rule, two renderings: each CEL rendering in chitu_api.kubernetes_cel accepts exactly the strings its Python
twin in chitu_api.kubernetes_rules accepts (evaluated with cel-python), on hand-picked edges (lengths at and past
each bound, prefixes, separators) and on hypothesis-drawn text over the characters that matter."""

from __future__ import annotations

from functools import cache

import celpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chitu_api import kubernetes_cel as rendered
from chitu_api import kubernetes_rules as rules

PAIRS = {
    "dns1123_subdomain": (rules.dns1123_subdomain, rendered.dns1123_subdomain),
    "qualified_name": (rules.qualified_name, rendered.qualified_name),
    "label_value": (rules.label_value, rendered.label_value),
    "env_var_name": (rules.env_var_name, rendered.env_var_name),
    "config_key": (rules.config_key, rendered.config_key),
}
EDGES = [
    "",
    "a",
    "A",
    "-a",
    "a-",
    "a.b",
    "a..b",
    ".",
    "..",
    "..a",
    ".a",
    "_a",
    "a_b",
    "1a",
    "a=b",
    "a b",
    "a/b",
    "a//b",
    "/b",
    "a/",
    "example.com/my-key",
    "Example.com/key",
    "example.com/-key",
    "a.b/c.d",
    "x" * 63,
    "x" * 64,
    "x" * 253,
    "x" * 254,
    "a" * 253 + "/b",
    "a" * 254 + "/b",
    "p/" + "b" * 63,
    "p/" + "b" * 64,
    ".".join(["a" * 63] * 4)[:253],
    "my.var-1",
    "MY_VAR",
    "é",
    "a\n",
    "a\nb",
]
TEXT = st.text(alphabet="aZ09-._/= é\n", max_size=80)


@cache
def program(expression: str):
    env = celpy.Environment()
    return env.program(env.compile(expression))


def cel_accepts(render, value: str) -> bool:
    return bool(program(render("self")).evaluate({"self": celpy.json_to_cel(value)}))


@pytest.mark.parametrize("name", sorted(PAIRS))
@pytest.mark.parametrize("value", EDGES, ids=lambda value: repr(value)[:24])
def test_cel_and_python_agree_on_edges(name, value):
    check, render = PAIRS[name]
    assert cel_accepts(render, value) == (check(value) is None), (name, value, check(value))


@pytest.mark.parametrize("name", sorted(PAIRS))
@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(value=TEXT)
def test_cel_and_python_agree_on_drawn_text(name, value):
    check, render = PAIRS[name]
    assert cel_accepts(render, value) == (check(value) is None), (name, value, check(value))


def test_literal_escapes_what_cel_would_read_as_escapes():
    assert rendered.literal("a'b\\.c") == "'a\\'b\\\\.c'"
    assert str(program(rendered.literal("a'b\\.c")).evaluate({})) == "a'b\\.c"
