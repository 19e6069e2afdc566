"""Data tasks: one module per data format, chosen by `data.format` (docs/data.md, "Data tasks").

A task of your own is a module on PYTHONPATH that defines `TASK` (a thinker.tasks.base.Task), named in the data
config as `data.task: mypkg.mytask`; it then decides everything a built-in format does.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from thinker.errors import ThinkerError
from thinker.tasks.base import Task

# data.format -> the module that defines its TASK, imported on first use: thinker/tasks/<format>.py, so a new
# built-in format is one module and nothing else names it
BUILTIN_TASKS = {info.name: f"{__name__}.{info.name}" for info in pkgutil.iter_modules(__path__)
                 if info.name != "base"}


def task_module(data: Any) -> str:
    """The module of `data`'s task: data.task when set, else the built-in one of data.format."""
    own = data.get("task") if hasattr(data, "get") else None
    if own:
        return str(own)
    fmt = str(data.format)
    if fmt not in BUILTIN_TASKS:
        raise ThinkerError(f"data.format={fmt} is not a data format thinker knows ({', '.join(BUILTIN_TASKS)})",
                           f"data.format (data={data.get('name')})",
                           "use one of those, or name a task module of your own with data.task=mypkg.mytask")
    return BUILTIN_TASKS[fmt]


def task_of(data: Any) -> Task:
    """The task that reads, tokenises and evaluates `data` (the data config)."""
    name = task_module(data)
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        raise ThinkerError(f"data.task={name} cannot be imported ({exc})", "data.task",
                           "put the module on PYTHONPATH, or unset data.task to use data.format's task") from exc
    task = getattr(module, "TASK", None)
    if not isinstance(task, Task):
        raise ThinkerError(f"data.task={name} defines no TASK (a thinker.tasks.base.Task instance)", "data.task",
                           "define TASK = YourTask() in that module")
    return task


def format_names() -> list[str]:
    return list(BUILTIN_TASKS)


__all__ = ["BUILTIN_TASKS", "Task", "task_of", "task_module", "format_names"]
