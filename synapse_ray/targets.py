"""Resolve an action target: a class, ``module:Class`` or ``path/to/file.py:Class``."""

from __future__ import annotations

import importlib
import importlib.util
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
        module = _import(module_part, target)
        try:
            cls = getattr(module, attr)
        except AttributeError:
            names = sorted(
                n
                for n, v in vars(module).items()
                if isinstance(v, type) and issubclass(v, BaseAction) and v.__module__ == module.__name__
            )
            hint = f" (actions there: {', '.join(names)})" if names else ""
            raise TargetError(f"{module_part!r} has no attribute {attr!r}{hint}", target=target) from None
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


def _import(module_part: str, target: str) -> Any:
    if module_part.endswith(".py") or "/" in module_part or "\\" in module_part:
        path = Path(module_part).expanduser().resolve()
        if not path.is_file():
            raise TargetError(f"Action file not found: {module_part} (from target {target!r})", target=target)
        name = f"synapse_ray_user_{path.stem}_{abs(hash(str(path))) % 10**8}"
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise TargetError(f"Cannot load {module_part}: not a Python file", target=target)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            raise TargetError(
                f"Importing {module_part} failed: {type(exc).__name__}: {exc}", target=target
            ) from exc
        return module
    try:
        return importlib.import_module(module_part)
    except ModuleNotFoundError as exc:
        raise TargetError(
            f"Module {module_part!r} not found ({exc}); check the name and that it is on PYTHONPATH",
            target=target,
        ) from exc
    except Exception as exc:
        raise TargetError(
            f"Importing {module_part!r} failed: {type(exc).__name__}: {exc}", target=target
        ) from exc
