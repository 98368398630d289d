#!/usr/bin/env python3
"""Copies the docstrings of ovl2-py/python/ovl2/_ovl2.pyi into the `///` comments of
ovl2-py/src/*.rs, so `help(ovl2.Driver)` shows the same documentation the stubs give IDEs.

The stub is the single place the Python API is documented; pyo3 turns the Rust doc comments
into `__doc__`. Run it after editing a docstring in the stub (ovl2-py/tests/test_docs.py fails
when the two differ):

    python3 scripts/sync-py-docs.py
"""

from __future__ import annotations

import ast
import inspect
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parent.parent
stub = root / "ovl2-py/python/ovl2/_ovl2.pyi"
sources = sorted((root / "ovl2-py/src").glob("*.rs"))


def stub_docs() -> dict[tuple[str, str], str]:
    """(class, member) -> cleaned docstring; member "" is the class itself, class "" the module.

    pyo3 shows no docstring of `#[new]`: the constructor's (``__new__`` in the stub) is
    appended to the class's, where ``help()`` shows it under the signature."""
    docs: dict[tuple[str, str], str] = {}
    for node in ast.parse(stub.read_text()).body:
        if isinstance(node, ast.FunctionDef) and ast.get_docstring(node):
            docs[("", node.name)] = inspect.cleandoc(ast.get_docstring(node) or "")
        if not isinstance(node, ast.ClassDef) or node.name.startswith("_"):
            continue
        if ast.get_docstring(node):
            docs[(node.name, "")] = inspect.cleandoc(ast.get_docstring(node) or "")
        for item in node.body:
            if isinstance(item, ast.FunctionDef) and ast.get_docstring(item):
                docs[(node.name, item.name)] = inspect.cleandoc(ast.get_docstring(item) or "")
        new = docs.pop((node.name, "__new__"), None)
        if new:
            docs[(node.name, "")] = docs.get((node.name, ""), "") + "\n\n" + new
    return docs


def block_start(lines: list[str], at: int) -> int:
    """The first line of the attributes and doc comments directly above line `at`."""
    i, depth = at, 0
    while i > 0:
        above = lines[i - 1].strip()
        if not above.startswith("///"):
            depth += above.count(")") + above.count("]") - above.count("(") - above.count("[")
        if depth <= 0 and not above.startswith(("#[", "///")):
            break
        i -= 1
    return i


def set_doc(lines: list[str], at: int, doc: str) -> None:
    """Replaces the doc comment of the item at line `at` with `doc`."""
    start = block_start(lines, at)
    indent = re.match(r"\s*", lines[at]).group(0)  # type: ignore[union-attr]
    kept = [line for line in lines[start:at] if not line.strip().startswith("///")]
    new = [f"{indent}///" + (f" {line}" if line else "") for line in doc.split("\n")]
    lines[start:at] = new + kept


def find(lines: list[str], pattern: str, begin: int = 0, end: int | None = None) -> int:
    rx = re.compile(pattern)
    for i in range(begin, len(lines) if end is None else end):
        if rx.search(lines[i]):
            return i
    raise SystemExit(f"sync-py-docs: no line matching {pattern!r}")


def rust_struct(lines: list[str], cls: str) -> str:
    """The Rust struct behind the Python class `cls`: `cls` itself, or `Py<cls>` (`name = "cls"`)."""
    for name in (cls, f"Py{cls}"):
        if any(re.match(rf"(pub(\(crate\))? )?struct {name} \{{", line) for line in lines):
            return name
    raise SystemExit(f"sync-py-docs: no #[pyclass] struct for {cls}")


def holder(files: dict[pathlib.Path, list[str]], pattern: str) -> list[str]:
    """The lines of the one source file with a line matching `pattern` (the module is split
    by concept, so a class or function may live in any of them)."""
    rx = re.compile(pattern)
    found = [lines for lines in files.values() if any(rx.search(line) for line in lines)]
    if len(found) != 1:
        raise SystemExit(f"sync-py-docs: {len(found)} files of ovl2-py/src match {pattern!r}")
    return found[0]


def main() -> int:
    files = {path: path.read_text().split("\n") for path in sources}
    for (cls, member), doc in sorted(stub_docs().items()):
        if cls == "":
            pattern = rf"^(pub(\(crate\))? )?fn {member}[<(]"
            lines = holder(files, pattern)
            set_doc(lines, find(lines, pattern), doc)
            continue
        lines = holder(files, rf"^(pub(\(crate\))? )?struct (Py)?{cls} \{{")
        struct = rust_struct(lines, cls)
        decl = find(lines, rf"^(pub(\(crate\))? )?struct {struct} \{{")
        if member == "":
            set_doc(lines, decl, doc)
            continue
        name = member
        # A method (or #[getter]) of the #[pymethods] impl, else a #[pyo3(get)] field.
        impl = decl
        while True:
            impl = find(lines, rf"^impl {struct} \{{", impl + 1)
            if lines[impl - 1] == "#[pymethods]":
                break
        impl_end = find(lines, r"^\}", impl)
        try:
            at = find(lines, rf"^    fn {name}[<(]", impl, impl_end)
        except SystemExit:
            at = find(lines, rf"^    (pub(\(crate\))? )?{name}: ", decl, find(lines, r"^\}", decl))
        set_doc(lines, at, doc)
    for path, lines in files.items():
        text = "\n".join(lines)
        if text != path.read_text():
            path.write_text(text)
            print(f"sync-py-docs: updated {path.relative_to(root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
