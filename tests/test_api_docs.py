"""The API reference: every public name is documented, its examples run, and docs/api.md is current.

The public names are those in ``__all__`` of ``solvers``, ``embedcache`` and ``fairhead``
(``docs/gen_api.py`` walks them, and writes ``docs/api.md`` from their docstrings).
"""

from __future__ import annotations

import doctest
import importlib.util
import inspect
import re
import sys
import warnings
from pathlib import Path

import numpydoc.validate as numpydoc_validate
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_generator():
    # docs/ is not a package: load the generator from its file (it is a script, not a test module)
    spec = importlib.util.spec_from_file_location("fairhead_docs_gen_api", ROOT / "docs" / "gen_api.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


gen_api = _load_generator()

#: The numpydoc checks every public name passes, and why these:
#:   GL08  it has a docstring at all;
#:   SS01, SS02, SS03  a summary line that starts with a capital letter and ends with a period
#:         (the line the reference's contents and `help()` show first);
#:   PR01, PR02  every parameter of the signature is documented, and no documented one is gone
#:         (the checks that catch a docstring left behind by a code change);
#:   RT01, YD01  a function that returns (or yields) says what;
#:   EX01  an Examples section (and test_examples_run runs it).
#: Left out on purpose: the formatting checks (GL01-GL03 quote placement, PR06-PR10 and RT02-RT05 the
#: wording of types and descriptions, SS05 the infinitive verb, SS06 one-line summaries), which say nothing
#: a reader misses, and SA01 / ES01 (See Also and an extended summary everywhere), which would add text for
#: its own sake.
NAME_CHECKS = frozenset({"GL08", "SS01", "SS02", "SS03", "PR01", "PR02", "RT01", "YD01", "EX01"})
#: The same for the public methods of a public class and the members of a public module (``solvers.metrics``
#: ...), less EX01: the class's (the module's) example shows them in use, and one example per method would
#: double the docstrings without telling more.
MEMBER_CHECKS = NAME_CHECKS - {"EX01"}
#: what a module's own docstring needs: a summary and an example (a module has no parameters)
MODULE_CHECKS = frozenset({"GL08", "SS01", "SS02", "SS03", "EX01"})


def _documented():
    """``(id, import path for numpydoc, the object, its checks)`` for everything docs/api.md renders.

    Each object once (``fairhead`` re-exports ``solvers``'s names); constants have no docstring of their
    own and are checked by test_constants_are_described.
    """
    seen, rows = set(), []

    def add(label, path, obj, checks):
        if id(obj) in seen:
            return
        seen.add(id(obj))
        rows.append(pytest.param(path, obj, checks, id=label))

    def add_class(label, cls, checks):
        # a typing.Protocol (embedcache.Source) has no constructor, so no parameters to document
        own = checks - {"PR01", "PR02"} if gen_api.is_protocol(cls) else checks
        add(label, f"{cls.__module__}.{cls.__qualname__}", cls, own)
        for name, raw, _kind in gen_api.public_methods(cls):
            func = gen_api.method_object(cls, name, raw)
            owner = func.__qualname__.rsplit(".", 1)[0]
            add(f"{label}.{name}", f"{func.__module__}.{owner}.{name}", func, MEMBER_CHECKS)

    for entry in gen_api.public_entries():
        obj = entry.obj
        if entry.kind == "class":
            add_class(entry.qualname, obj, NAME_CHECKS)
        elif entry.kind == "function":
            add(entry.qualname, f"{obj.__module__}.{obj.__qualname__}", obj, NAME_CHECKS)
        elif entry.kind == "module":
            add(entry.qualname, obj.__name__, obj, MODULE_CHECKS)
            for member in gen_api.module_members(obj):
                value = getattr(obj, member)
                kind = gen_api.kind_of(value)
                if kind == "class":
                    add_class(f"{entry.qualname}.{member}", value, MEMBER_CHECKS)
                elif kind == "function":
                    add(f"{entry.qualname}.{member}", f"{value.__module__}.{value.__qualname__}", value,
                        MEMBER_CHECKS)
    return rows


DOCUMENTED = _documented()


@pytest.mark.parametrize("path, obj, checks", DOCUMENTED)
def test_numpydoc_validation(path, obj, checks):
    with warnings.catch_warnings():
        # a module docstring may have sections of its own ("Two families" in solvers.constraints): prose, not API
        warnings.filterwarnings("ignore", message="Unknown section", category=UserWarning)
        result = numpydoc_validate.validate(path)
    errors = [f"{code}: {message}" for code, message in result["errors"] if code in checks]
    assert not errors, f"{path} ({result['file']}:{result['file_line']}):\n" + "\n".join(errors)


@pytest.mark.parametrize("path, obj, checks", DOCUMENTED)
def test_examples_run(path, obj, checks):
    docstring = inspect.getdoc(obj) or ""
    # the globals doctest itself gives an example: those of the module that defines the object
    module = obj if inspect.ismodule(obj) else sys.modules[obj.__module__]
    test = doctest.DocTestParser().get_doctest(docstring, dict(vars(module)), path, None, 0)
    if "EX01" in checks:
        assert test.examples, f"{path} has no example to run"
    for example in test.examples:
        assert not example.options.get(doctest.SKIP), f"{path}: an example is skipped: {example.source!r}"
    runner = doctest.DocTestRunner()
    report = []
    runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)


def test_constants_are_described():
    """A public constant has no docstring: its ``#:`` comment is what the reference shows."""
    constants = [e for e in gen_api.public_entries() if e.kind == "constant"]
    assert constants, "expected the packages to export constants (DEFAULT_BACKBONE, FORMAT_VERSION, ...)"
    for entry in constants:
        package = entry.qualname.split(".")[0]
        name = entry.qualname.rsplit(".", 1)[1]
        comment = gen_api.constant_comment(name, entry.obj, gen_api.defining_modules(package))
        assert comment, f"{entry.qualname} has no `#:` comment above its assignment"


@pytest.fixture(scope="module")
def rendered() -> str:
    return gen_api.render()


def test_api_reference_is_current(rendered):
    committed = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    assert committed == rendered, "docs/api.md is stale; run `python docs/gen_api.py` and commit it"


def test_reference_links_resolve(rendered):
    """Every in-page link of the reference points at one heading (GitHub's anchors, no duplicates)."""
    text = rendered
    headings = [gen_api.anchor(h.replace("`", "")) for h in re.findall(r"^#+ (.*)$", text, flags=re.M)]
    duplicates = sorted({h for h in headings if headings.count(h) > 1})
    assert not duplicates, f"headings with the same anchor: {duplicates}"
    missing = sorted(set(re.findall(r"\]\(#([^)]+)\)", text)) - set(headings))
    assert not missing, f"links to no heading: {missing}"
