"""The training function by reference, and JSON-only values: what ``TorchTrainer`` sends to
its workers without pickling anything.

``function_ref(fn)`` describes a module-level function as a module name (or, for the script
that called ``fit()``, its file path) plus a qualified name; ``load_function(ref)`` imports
it in a worker. A script is imported under ``__dtrain_main__`` (as multiprocessing's spawn
imports it as ``__mp_main__``), so its ``if __name__ == "__main__":`` block does not run.
``check_json(value, what)`` refuses what JSON would not give back unchanged, naming the key.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable
from typing import Any

MAIN_ALIAS = "__dtrain_main__"
_SCALARS = (type(None), bool, int, float, str)
_FIX = (
    "define it with `def` at the top level of a module (or of the script that calls fit()), "
    "and pass what it needs through train_loop_config"
)


def function_ref(fn: Callable) -> dict[str, Any]:
    """How a worker imports ``fn``: ``{"module" | "script", "qualname", "sys_path"}``.

    Raises:
        TypeError: ``fn`` is a lambda, a closure, a method of an instance, or not a function.
        ValueError: its module cannot be imported by a worker (no file, or the name does not
            lead back to ``fn``), or a script without an ``if __name__ == "__main__":`` guard
            (its ``fit()`` would run again in every worker).
    """
    if not inspect.isfunction(fn):
        raise TypeError(
            f"train_loop_per_worker={fn!r} is a {type(fn).__name__}, not a function: workers "
            f"import the function by name (dtrain never pickles); {_FIX}"
        )
    qualname = fn.__qualname__
    if "<lambda>" in qualname or "<locals>" in qualname:
        kind = "a lambda" if "<lambda>" in qualname else "a nested function (closure)"
        raise TypeError(
            f"train_loop_per_worker={qualname} is {kind}: workers import the function by name "
            f"and dtrain never pickles, so it must be reachable from its module; {_FIX}"
        )
    name = fn.__module__
    module = sys.modules.get(name)
    if module is None or _resolve(module, qualname) is not fn:
        raise ValueError(
            f"train_loop_per_worker={name}.{qualname} is not importable: {name}.{qualname} does "
            f"not name this function; {_FIX}"
        )
    spec = None
    if name == "__main__":
        spec = getattr(module, "__spec__", None)
        if spec is not None and spec.name and spec.name != "__main__":
            name = spec.name  # run as `python -m package.module`: import it by that name
        else:
            path = getattr(module, "__file__", None)
            if not path:
                raise ValueError(
                    f"train_loop_per_worker={qualname} is defined in an interactive session "
                    f"(no file for workers to import); {_FIX}"
                )
            path = os.path.abspath(path)
            check_main_guard(path)
            return {"script": path, "qualname": qualname, "sys_path": [os.path.dirname(path)]}
    path = getattr(module, "__file__", None)
    if not path:
        raise ValueError(
            f"train_loop_per_worker={name}.{qualname} is not importable: module {name!r} has "
            f"no file (was it made with exec or types.ModuleType?); {_FIX}"
        )
    if spec is not None and spec.origin:  # `python -m` ran it: imported again in workers
        check_main_guard(spec.origin)
    return {"module": name, "qualname": qualname, "sys_path": [_import_root(name, path)]}


def _resolve(module: Any, qualname: str) -> Any:
    target = module
    for part in qualname.split("."):
        target = getattr(target, part, None)
    return target


def _import_root(name: str, path: str) -> str:
    """The sys.path entry from which ``import name`` finds ``path``."""
    parts = name.split(".")
    up = len(parts) if os.path.basename(path).startswith("__init__.") else len(parts) - 1
    root = os.path.dirname(os.path.abspath(path))
    for _ in range(up):
        root = os.path.dirname(root)
    return root


def check_main_guard(path: str) -> None:
    """Refuse a script without an ``if __name__ == "__main__":`` guard: each worker imports it
    to find the function, and without the guard the import would start the whole job again.

    Lenient on purpose: any ``if`` (or comparison, or ``match``) that mentions both
    ``__name__`` and ``"__main__"`` passes, whatever its form. A guard that does not in fact
    protect ``fit()`` is caught in the worker instead (``trainer_session.importing_user_code``).
    """
    try:
        with open(path, encoding="utf-8") as handle:
            tree = ast.parse(handle.read(), path)
    except (OSError, SyntaxError, ValueError):
        return  # the worker's import will say what is wrong
    for node in ast.walk(tree):
        if isinstance(node, (ast.If, ast.IfExp, ast.Compare, ast.Match)) and _mentions_main(node):
            return
    raise ValueError(
        f'{path} has no `if __name__ == "__main__":` guard, and train_loop_per_worker is '
        "defined in it: every worker imports this script to find the training function, and "
        "the import would start the job again; move the code that builds the trainer and "
        'calls fit() under `if __name__ == "__main__":`'
    )


def _mentions_main(node: ast.AST) -> bool:
    """Whether the test of ``node`` (the whole node for a comparison; the subject and the
    case patterns for ``match``) names ``__name__`` and the string ``"__main__"``."""
    if isinstance(node, (ast.If, ast.IfExp)):
        parts: list[ast.AST] = [node.test]
    elif isinstance(node, ast.Match):
        parts = [node.subject, *(case.pattern for case in node.cases)]
    else:
        parts = [node]
    inside = [inner for part in parts for inner in ast.walk(part)]
    has_name = any(isinstance(n, ast.Name) and n.id == "__name__" for n in inside)
    has_main = any(isinstance(n, ast.Constant) and n.value == "__main__" for n in inside)
    return has_name and has_main


def load_function(ref: dict[str, Any]) -> Callable:
    """Import the function ``function_ref`` described (in a worker)."""
    for entry in reversed(ref.get("sys_path", [])):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    if "script" in ref:
        spec = importlib.util.spec_from_file_location(MAIN_ALIAS, ref["script"])
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import the script {ref['script']!r} (is it on this node?)")
        module = importlib.util.module_from_spec(spec)
        sys.modules[MAIN_ALIAS] = module
        spec.loader.exec_module(module)
        where = ref["script"]
    else:
        module = importlib.import_module(ref["module"])
        where = ref["module"]
    fn = _resolve(module, ref["qualname"])
    if not callable(fn):
        raise ImportError(f"{where} has no function {ref['qualname']!r} (changed since fit()?)")
    return fn


def check_json(value: Any, what: str) -> None:
    """Raise TypeError, naming the path (``what['key'][0]``), for a value JSON would not give
    back unchanged: only dicts with str keys, lists, str, int, float, bool and None pass."""
    todo = [(value, what)]
    while todo:
        item, path = todo.pop()
        if isinstance(item, _SCALARS) and type(item) in _SCALARS:
            continue
        if type(item) is list:
            todo.extend((v, f"{path}[{i}]") for i, v in enumerate(item))
            continue
        if type(item) is dict:
            for key, v in item.items():
                if type(key) is not str:
                    raise TypeError(
                        f"{path} has the key {key!r} ({type(key).__name__}): keys must be str, "
                        "since the value travels as JSON (dtrain never pickles); use str(key)"
                    )
                todo.append((v, f"{path}[{key!r}]"))
            continue
        hint = " (use list(...))" if isinstance(item, tuple) else ""
        if hasattr(item, "item") and callable(item.item):
            hint = " (use .item() for a scalar, .tolist() for an array)"
        raise TypeError(
            f"{path} is {type(item).__name__} {_short(item)}: it must be JSON-serialisable "
            f"(dict with str keys, list, str, int, float, bool, None), since it travels as JSON "
            f"and dtrain never pickles{hint}"
        )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
