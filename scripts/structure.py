#!/usr/bin/env python3
"""The layout rules of the workspace, checked from the source text.

1. No import cycle between modules. A module's dependencies are the
   `crate::…` and `super::…` paths it names outside its tests. A parent and its
   own children may name each other (the parent declares them); between any two
   modules where neither contains the other, the dependencies, lifted to the
   children of their closest common parent, form no cycle. So `orders::desk`
   naming `gate` and `gate::repair` naming `orders::status` is a cycle between
   `orders` and `gate`, however deep the names.
2. No file over 600 lines outside its tests, unless its first lines say why in
   a comment starting `//! One concept:`.
3. No function over 80 lines, unless the comment lines just above it (or its
   attributes) hold `Long:` and the reason.

`--self-test` shows each rule failing on a small broken tree first.
Exit 0 when every rule holds, 1 with each breach listed otherwise.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

MAX_FILE_LINES = 600
MAX_FN_LINES = 80
CRATES = ["model", "server", "cli", "chaos", "testkit"]


def strip(text: str) -> str:
    """The code without comments, strings and char literals (same line count)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("\n" * text.count("\n", i, j))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and (i == 0 or not text[i - 1].isalnum() and text[i - 1] != "_"):
            hashes = re.match(r"r(#*)\"", text[i:]).group(1)
            end = '"' + hashes
            j = text.find(end, i + 2 + len(hashes))
            j = n if j < 0 else j + len(end)
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j + 1
        elif c == "'":
            m = re.match(r"'(\\.|\\u\{[0-9a-fA-F]+\}|[^\\'])'", text[i:])
            if m:
                out.append("' '")
                i += len(m.group(0))
            else:  # a lifetime
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def code_lines(code: str) -> str:
    """The code before its `#[cfg(test)]` module, if any."""
    m = re.search(r"^\s*#\[cfg\(test\)\]\s*\n\s*(pub(\(\w+\))?\s+)?mod\s+\w+\s*\{", code, re.M)
    return code[: m.start()] if m else code


def module_of(src: Path, file: Path) -> tuple[str, ...]:
    rel = file.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts.pop()
    return tuple(parts)


def use_paths(code: str):
    """Every path after `crate::`, `super::` or `self::`, use-groups expanded."""
    ident = r"[A-Za-z_][A-Za-z0-9_]*"
    for m in re.finditer(r"(?<![A-Za-z0-9_:])((?:super::)+|crate::|self::)", code):
        head = m.group(1)
        yield from expand(head, code, m.end(), ident)


def expand(prefix: str, code: str, i: int, ident: str):
    segs = []
    while True:
        m = re.match(r"\s*(" + ident + r")\s*", code[i:])
        if m and m.group(1) not in ("as",):
            segs.append(m.group(1))
            i += m.end()
            if code.startswith("::", i):
                i += 2
                continue
            yield prefix, segs
            return
        if code[i:].lstrip().startswith("{"):
            i = code.index("{", i) + 1
            depth, start = 1, i
            items, cur = [], i
            while depth and i < len(code):
                if code[i] == "{":
                    depth += 1
                elif code[i] == "}":
                    depth -= 1
                elif code[i] == "," and depth == 1:
                    items.append(code[cur:i])
                    cur = i + 1
                i += 1
            items.append(code[cur : i - 1])
            yield prefix, segs
            for item in items:
                item = item.strip()
                if not item or item == "self":
                    continue
                for p, s in expand("", item, 0, ident):
                    yield prefix, segs + s
            return
        yield prefix, segs
        return


def resolve(current: tuple, prefix: str, segs: list, modules: set) -> tuple | None:
    if prefix == "crate::":
        base: tuple = ()
    elif prefix == "self::":
        base = current
    else:
        ups = prefix.count("super::")
        base = current[: len(current) - ups] if ups <= len(current) else ()
    path = base + tuple(segs)
    for k in range(len(path), -1, -1):
        if path[:k] in modules:
            return path[:k]
    return None


def crate_graph(src: Path):
    files = sorted(src.rglob("*.rs"))
    modules = {module_of(src, f): f for f in files}
    # Inline `mod name {` blocks other than tests belong to their file.
    edges = defaultdict(set)
    for mod, f in modules.items():
        code = code_lines(strip(f.read_text()))
        for prefix, segs in use_paths(code):
            target = resolve(mod, prefix, segs, set(modules))
            if target is not None and target != mod:
                edges[mod].add(target)
    return modules, edges


def is_ancestor(a: tuple, b: tuple) -> bool:
    return len(a) < len(b) and b[: len(a)] == a


def lifted(edges) -> dict:
    """Each edge between unrelated modules, as one between the children of
    their closest common parent; edges along the tree are left out."""
    out = defaultdict(set)
    for a, targets in edges.items():
        for b in targets:
            if a == b or is_ancestor(a, b) or is_ancestor(b, a):
                continue
            k = 0
            while a[k] == b[k]:
                k += 1
            out[a[: k + 1]].add((b[: k + 1], a, b))
    return out


def cycles(edges) -> list[list[tuple]]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph = defaultdict(set)
    for a, targets in lifted(edges).items():
        for b, _, _ in targets:
            graph[a].add(b)
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def why(edges, comp) -> list[str]:
    members = set(comp)
    lines = []
    for a, targets in sorted(lifted(edges).items()):
        if a not in members:
            continue
        for b, frm, to in sorted(targets):
            if b in members:
                lines.append(f"    {'::'.join(frm)} -> {'::'.join(to)}")
    return lines


FN = re.compile(r"^[ \t]*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+(\w+)", re.M)


def long_functions(raw: str, code: str):
    raw_lines = raw.split("\n")
    for m in FN.finditer(code):
        start = code.count("\n", 0, m.start())
        brace = code.find("{", m.end())
        semi = code.find(";", m.end())
        if brace < 0 or (0 <= semi < brace):
            continue  # a declaration without a body
        depth, i = 0, brace
        while i < len(code):
            if code[i] == "{":
                depth += 1
            elif code[i] == "}":
                depth -= 1
                if depth == 0:
                    break
            i += 1
        end = code.count("\n", 0, i)
        length = end - start + 1
        if length <= MAX_FN_LINES:
            continue
        j, excused = start - 1, False
        while j >= 0 and raw_lines[j].strip().startswith(("//", "#[")):
            if "Long:" in raw_lines[j]:
                excused = True
            j -= 1
        if not excused:
            yield m.group(6), start + 1, length


def check(root: Path) -> list[str]:
    problems = []
    for crate in CRATES:
        src = root / crate / "src"
        if not src.is_dir():
            continue
        modules, edges = crate_graph(src)
        for comp in cycles(edges):
            names = " <-> ".join("::".join(c) for c in comp)
            problems.append(f"{crate}: import cycle between {names}:")
            problems.extend(why(edges, comp))
        for mod, f in sorted(modules.items()):
            raw = f.read_text()
            code = code_lines(strip(raw))
            lines = code.count("\n")
            head = "\n".join(raw.split("\n")[:40])
            if lines > MAX_FILE_LINES and "//! One concept:" not in head:
                problems.append(f"{f.relative_to(root)}: {lines} lines outside its tests (over {MAX_FILE_LINES})")
            for name, line, length in long_functions(raw, code):
                problems.append(f"{f.relative_to(root)}:{line}: fn {name} is {length} lines (over {MAX_FN_LINES})")
    return problems


def self_test() -> None:
    """Each rule seen failing on a tree that breaks it, and passing once fixed."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "server" / "src"
        (src / "a").mkdir(parents=True)
        (src / "lib.rs").write_text("mod a;\nmod b;\n")
        (src / "a" / "mod.rs").write_text("mod deep;\nuse self::deep::X;\n")
        (src / "a" / "deep.rs").write_text("use crate::{b::Y, a::Z};\npub struct X;\n")
        (src / "b.rs").write_text("// crate::a is named only in a comment\nfn f() { let s = \"crate::a\"; }\n")
        assert check(Path(tmp)) == [], check(Path(tmp))
        (src / "b.rs").write_text("#[cfg(test)]\nmod tests {\n  use crate::a::X;\n}\n")
        assert check(Path(tmp)) == [], "a test's import is not the module's"
        (src / "b.rs").write_text("use super::a::deep::X;\n")
        found = check(Path(tmp))
        assert found and "import cycle between a <-> b" in found[0], found
        (src / "b.rs").write_text("fn f() {\n" + "    let x = 1;\n" * 85 + "}\n")
        found = check(Path(tmp))
        assert found and "fn f is 87 lines" in found[0], found
        (src / "b.rs").write_text("// Long: a table, one arm per case.\nfn f() {\n" + "    let x = 1;\n" * 85 + "}\n")
        assert check(Path(tmp)) == [], "a long function with its reason passes"
        body = "".join(f"fn f{i}() {{}}\n" for i in range(610))
        (src / "b.rs").write_text(body)
        found = check(Path(tmp))
        assert found and "610 lines outside its tests" in found[0], found
        (src / "b.rs").write_text("//! One concept: the table of every case.\n" + body)
        assert check(Path(tmp)) == [], "a long file with its reason passes"
    print("structure self-test: each rule seen failing, and passing once fixed")


def main() -> int:
    if "--self-test" in sys.argv:
        self_test()
    root = Path(__file__).resolve().parent.parent
    problems = check(root)
    for p in problems:
        print(p)
    if problems:
        return 1
    print("structure: no import cycle, no file over 600 lines, no function over 80 lines without a reason")
    return 0


if __name__ == "__main__":
    sys.exit(main())
