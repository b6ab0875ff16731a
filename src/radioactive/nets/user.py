"""Architectures from the user's own code: ``package.module:callable`` or ``path/to/file.py:callable``.

The command line's ``--arch`` (``detect``, ``--reference-arch``, ``train``) accepts such a name, which makes
radioactive import that module and call that callable: it runs the user's code, with the user's rights. The
weights themselves are still read without executing anything (safetensors, or ``torch.load(weights_only=True)``),
and a suspect file is never trusted to name code: a checkpoint whose spec records a user architecture is loaded
only when the caller names the same architecture itself (see :func:`radioactive.nets.load_suspect`).

The callable is called with keyword arguments ``num_classes=N`` (outputs of the network), then
``in_channels=C`` (channels of the images it is given) only when its signature takes ``in_channels`` or
``**kwargs``, then the spec's extra ``kwargs``; it must return a :class:`torch.nn.Module` whose ``state_dict``
the weights fit. A class (``mymodels:Net``) is a callable too.

Module names resolve like ``python -m``: the current directory first, then ``sys.path`` (``PYTHONPATH``). A
file path form (``nets/mine.py:build``) loads that file, with its folder first on ``sys.path`` meanwhile.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import ConfigError

__all__ = ["RESERVED_SOURCES", "USER_SOURCE", "is_user_arch", "build_user_model"]

RESERVED_SOURCES = ("builtin", "torchvision", "timm")  # ``source:name`` prefixes that are not user modules
USER_SOURCE = "python"  # NetSpec.source of a user architecture; NetSpec.arch is then "module:callable"


def is_user_arch(arch: str) -> bool:
    """True for ``module:callable`` / ``file.py:callable`` (any ``X:Y`` whose X is not builtin/torchvision/timm)."""
    return ":" in arch and arch.split(":", 1)[0] not in RESERVED_SOURCES


def _split(arch: str) -> tuple[str, str]:
    module, _, attribute = arch.rpartition(":")
    if not module or not attribute or not attribute.replace(".", "_").isidentifier():
        raise ConfigError(f"--arch {arch!r}: a user architecture is written package.module:callable or "
                          "path/to/file.py:callable (for example mymodels:build_net)")
    return module, attribute


@contextlib.contextmanager
def _path_first(folder: str) -> Iterator[None]:
    """``folder`` first on ``sys.path`` while importing and building (as ``python -m`` puts the current folder)."""
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    try:
        yield
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(folder)


def _is_file_form(module: str) -> bool:
    return module.endswith(".py") or "/" in module or os.sep in module


def _import(arch: str, module: str) -> Any:
    if _is_file_form(module):
        path = Path(module).expanduser().resolve()
        if not path.is_file():
            raise ConfigError(f"--arch {arch!r}: {str(path)!r} does not exist; give the path of the Python file that "
                              "defines the network, or an importable module name (package.module:callable)")
        # One module per file, under a name that cannot shadow a real package.
        name = "radioactive_user_arch_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"--arch {arch!r}: {str(path)!r} cannot be loaded as a Python module")
        loaded = importlib.util.module_from_spec(spec)
        sys.modules[name] = loaded
        try:
            with _path_first(str(path.parent)):
                spec.loader.exec_module(loaded)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        return loaded
    importlib.invalidate_caches()  # a module written since the last import in this process
    with _path_first(os.getcwd()):
        return importlib.import_module(module)


def _load_callable(arch: str) -> Any:
    module, attribute = _split(arch)
    try:
        loaded = _import(arch, module)
    except ConfigError:
        raise
    except ModuleNotFoundError as exc:
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            raise ConfigError(f"--arch {arch!r}: no module named {exc.name!r} (looked in the current folder "
                              f"{os.getcwd()!r} and on sys.path); run from the folder that holds it, add its folder "
                              "to PYTHONPATH, or give the file: path/to/file.py:callable") from None
        raise ConfigError(f"--arch {arch!r}: importing {module!r} failed: it needs module {exc.name!r}, which is not "
                          "installed") from None
    except Exception as exc:
        raise ConfigError(f"--arch {arch!r}: importing {module!r} raised {type(exc).__name__}: {exc}") from None
    target: Any = loaded
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ConfigError(f"--arch {arch!r}: module {module!r} has no attribute {attribute!r}; name the function "
                              "or class that builds the network")
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(f"--arch {arch!r}: {attribute!r} is a {type(target).__name__}, not a callable that builds "
                          "the network")
    return target


def _takes(function: Any, name: str) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: give only num_classes
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def build_user_model(arch: str, num_classes: int, *, in_channels: int = 1, **kwargs: Any) -> nn.Module:
    """Import ``arch`` (``module:callable`` or ``file.py:callable``) and build its network.

    Calls ``callable(num_classes=num_classes, in_channels=in_channels, **kwargs)``, leaving ``in_channels``
    out when the callable takes neither it nor ``**kwargs``. This runs the user's code.

    Raises:
        ConfigError: one line naming ``arch``, when the module cannot be imported, lacks the attribute, the
            attribute is not callable, the call raises, or it returns something other than an ``nn.Module``.
    """
    build = _load_callable(arch)
    options: dict[str, Any] = {"num_classes": num_classes}
    if _takes(build, "in_channels"):
        options["in_channels"] = in_channels
    options.update(kwargs)
    shown = ", ".join(f"{k}={v!r}" for k, v in options.items())
    try:
        model = build(**options)
    except Exception as exc:
        raise ConfigError(f"--arch {arch!r}: {arch.rpartition(':')[2]}({shown}) raised {type(exc).__name__}: "
                          f"{exc}") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"--arch {arch!r}: {arch.rpartition(':')[2]}({shown}) returned an object "
                          f"of type {type(model).__name__}, not a torch.nn.Module")
    return model
