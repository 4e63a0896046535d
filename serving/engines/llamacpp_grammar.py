"""JSON schemas to llama.cpp grammars (GBNF), through the same xgrammar conversion the
other engines use.

llama.cpp converts a JSON schema itself, but its grammar lets a model put
newlines and up to 20 spaces between tokens, where gale's other engines
constrain to compact JSON (`serving.engines.grammar`). So the llama.cpp engine
hands llama.cpp the grammar xgrammar builds from the schema, written in
llama.cpp's dialect. The two dialects differ only in spelling: rule names
(GBNF has no `_`), repetition (`{0, -1}` is `*`), the NUL escape, and
xgrammar's lookahead hints (`(= ...)`), which only speed xgrammar up and are
left out.
"""

from __future__ import annotations

import re
from functools import lru_cache

from serving.engines.grammar import SEPARATORS

_REPEAT = re.compile(r"\{(\d+), (-?\d+)\}")


@lru_cache(maxsize=64)
def schema_grammar(schema: str) -> str:
    """The GBNF grammar of compact JSON matching `schema` (a JSON schema as text)."""
    import xgrammar as xgr

    grammar = xgr.Grammar.from_json_schema(schema, any_whitespace=False, separators=SEPARATORS)
    return to_gbnf(str(grammar))


def to_gbnf(ebnf: str) -> str:
    """xgrammar's EBNF printout in llama.cpp's GBNF spelling."""
    out: list[str] = []
    i, n = 0, len(ebnf)
    while i < n:
        c = ebnf[i]
        if c == '"':
            end = _string_end(ebnf, i)
            out.append(ebnf[i:end])
            i = end
        elif c == "[":
            end = _class_end(ebnf, i)
            out.append(ebnf[i:end].replace("\\0", "\\x00"))
            i = end
        elif ebnf.startswith("(=", i):
            i = _group_end(ebnf, i)  # a lookahead hint: not part of the language
        elif c == "{":
            match = _REPEAT.match(ebnf, i)
            if match is None:
                raise ValueError(f"unexpected '{{' at {i} in the grammar")
            low, high = int(match[1]), int(match[2])
            if (low, high) == (0, -1):
                out.append("*")
            elif (low, high) == (1, -1):
                out.append("+")
            elif high == -1:
                out.append(f"{{{low},}}")
            else:
                out.append(f"{{{low},{high}}}")
            i = match.end()
        elif c == "_":
            out.append("-")
            i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _string_end(text: str, start: int) -> int:
    i = start + 1
    while text[i] != '"':
        i += 2 if text[i] == "\\" else 1
    return i + 1


def _class_end(text: str, start: int) -> int:
    i = start + 1
    while text[i] != "]":
        i += 2 if text[i] == "\\" else 1
    return i + 1


def _group_end(text: str, start: int) -> int:
    depth, i = 0, start
    while True:
        c = text[i]
        if c == '"':
            i = _string_end(text, i)
            continue
        if c == "[":
            i = _class_end(text, i)
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
