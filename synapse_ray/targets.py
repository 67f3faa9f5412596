"""Resolve an action target: a class, ``module:Class`` or ``path/to/file.py:Class``."""

from __future__ import annotations

import hashlib
import importlib.util
import pkgutil
import sys
from pathlib import Path
from typing import Any

from synapse_ray.action import BaseAction
from synapse_ray.errors import TargetError


def load_action(target: str | type[Any]) -> type[BaseAction[Any]]:
    """Return the action class named by ``target``; every failure says which part is wrong."""
    if isinstance(target, type):
        cls: Any = target
        where = f"{target.__module__}.{target.__qualname__}"
    else:
        if not isinstance(target, str) or ":" not in target:
            raise TargetError(
                f"Invalid action target {target!r}: expected 'package.module:ClassName' "
                "or 'path/to/file.py:ClassName'",
                target=str(target),
            )
        module_part, _, attr = target.rpartition(":")
        if not module_part or not attr:
            raise TargetError(
                f"Invalid action target {target!r}: missing module or class name", target=target
            )
        cls = _resolve(module_part, attr, target)
        where = target
    if not (isinstance(cls, type) and issubclass(cls, BaseAction)):
        raise TargetError(
            f"{where} is not an action: expected a subclass of BaseAction/BaseTrainAction, got {cls!r}",
            target=where,
        )
    if cls.params_model is None:
        raise TargetError(
            f"Action {where} has no params model: subclass BaseTrainAction[YourParams] "
            "or set params_model = YourParams",
            target=where,
        )
    return cls


def _is_file(module_part: str) -> bool:
    return module_part.endswith(".py") or "/" in module_part or "\\" in module_part


def _resolve(module_part: str, attr: str, target: str) -> Any:
    if _is_file(module_part):
        module = _import_file(module_part, target)
        try:
            return getattr(module, attr)
        except AttributeError:
            raise _missing(module, module_part, attr, target) from None
    try:
        return pkgutil.resolve_name(f"{module_part}:{attr}")
    except ModuleNotFoundError as exc:
        raise TargetError(
            f"Module {module_part!r} not found ({exc}); check the name and that it is on PYTHONPATH",
            target=target,
        ) from exc
    except AttributeError:
        module = sys.modules.get(module_part)
        if module is None:
            raise TargetError(f"{module_part!r} has no attribute {attr!r}", target=target) from None
        raise _missing(module, module_part, attr, target) from None
    except ValueError as exc:
        raise TargetError(f"Invalid action target {target!r}: {exc}", target=target) from None
    except Exception as exc:
        raise TargetError(
            f"Importing {module_part!r} failed: {type(exc).__name__}: {exc}", target=target
        ) from exc


def _missing(module: Any, module_part: str, attr: str, target: str) -> TargetError:
    names = sorted(
        n
        for n, v in vars(module).items()
        if isinstance(v, type) and issubclass(v, BaseAction) and v.__module__ == module.__name__
    )
    hint = f" (actions there: {', '.join(names)})" if names else ""
    return TargetError(f"{module_part!r} has no attribute {attr!r}{hint}", target=target)


_versions: dict[str, tuple[int, int]] = {}


def file_module_name(path: Path) -> str:
    """A module name stable across processes and runs for one file path.

    (The salted built-in ``hash()`` differs per process, so a name derived
    from it would not survive a trip to a worker or a later submit.)
    """
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    return f"synapse_ray_user_{path.stem}_{digest}"


def _import_file(module_part: str, target: str) -> Any:
    """Import a file target; a file edited since the last import is imported again."""
    path = Path(module_part).expanduser().resolve()
    if not path.is_file():
        raise TargetError(f"Action file not found: {module_part} (from target {target!r})", target=target)
    name = file_module_name(path)
    stat = path.stat()
    version = (stat.st_mtime_ns, stat.st_size)
    if name in sys.modules and _versions.get(name) == version:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise TargetError(f"Cannot load {module_part}: not a Python file", target=target)
    module = importlib.util.module_from_spec(spec)
    previous = sys.modules.get(name)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        if previous is not None:
            sys.modules[name] = previous
        else:
            del sys.modules[name]
        raise TargetError(
            f"Importing {module_part} failed: {type(exc).__name__}: {exc}", target=target
        ) from exc
    _versions[name] = version
    return module
