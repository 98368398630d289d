"""help(ovl2.Driver) shows the API documentation: the native module's docstrings are the
stub's (scripts/sync-py-docs.py copies them into the Rust doc comments)."""

from __future__ import annotations

import ast
import inspect
import pathlib
import pydoc
from typing import Any

import ovl2
import ovl2._ovl2

# The wheel ships the stub next to the module; a source checkout has it in python/ovl2.
STUB = next(
    p
    for p in (
        pathlib.Path(ovl2.__file__).with_name("_ovl2.pyi"),
        pathlib.Path(__file__).resolve().parent.parent / "python" / "ovl2" / "_ovl2.pyi",
    )
    if p.exists()
)


def stub_docs() -> dict[str, str]:
    """'Class.member' (or 'Class', or a function's name) -> the stub's docstring."""
    docs: dict[str, str] = {}
    for node in ast.parse(STUB.read_text()).body:
        if isinstance(node, ast.FunctionDef):
            docs[node.name] = ast.get_docstring(node) or ""
        if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            docs[node.name] = ast.get_docstring(node) or ""
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and ast.get_docstring(item):
                    docs[f"{node.name}.{item.name}"] = ast.get_docstring(item) or ""
            # pyo3 has no constructor docstring: help() shows the class's, which ends with it.
            new = docs.pop(f"{node.name}.__new__", None)
            if new:
                docs[node.name] = inspect.cleandoc(docs[node.name]) + "\n\n" + inspect.cleandoc(new)
    return docs


def runtime(name: str) -> Any:
    obj: Any = ovl2._ovl2
    for part in name.split("."):
        obj = inspect.getattr_static(obj, part) if isinstance(obj, type) else getattr(obj, part)
    return obj


def test_every_docstring_is_the_stubs() -> None:
    docs = stub_docs()
    assert len(docs) > 60, sorted(docs)
    differ = [
        name for name, doc in docs.items() if inspect.cleandoc(runtime(name).__doc__ or "") != inspect.cleandoc(doc)
    ]
    assert not differ, f"run scripts/sync-py-docs.py; these differ from _ovl2.pyi: {differ}"


def test_help_driver_is_real_documentation() -> None:
    text = pydoc.plain(pydoc.render_doc(ovl2.Driver))
    assert "_ovl2.pyi" not in text
    assert "in exactly Docker's on-disk format" in text
    # Parameters, errors and the signature of the methods people call most.
    for needle in (
        ":param open_mode:",
        ":raises LayerNotFoundError: no such layer.",
        ":param expect_digest:",
        "apply_diff(self, /, id, source, parent=None, *, sync=None, expect_digest=None)",
        "with driver.mounted(",
    ):
        assert needle in text, needle
    for name in ("create", "remove", "apply_diff", "diff", "get", "put", "check", "changes"):
        doc = getattr(ovl2.Driver, name).__doc__
        assert doc and len(doc.splitlines()) >= 2, name
