"""Compatibility path: :mod:`crescade.tools.tasks` under its documented name ``crescade.tasks``."""

from .tools.tasks import (
    DEFAULT_SEED,
    FAMILIES,
    LIST_FORMAT,
    MONTHS,
    NUMBER_FORMAT,
    WEEKDAYS,
    SolvedTask,
    default_task_suite,
    generate_solved,
    generate_tasks,
    main,
    split_of,
)

__all__ = [
    "DEFAULT_SEED",
    "FAMILIES",
    "LIST_FORMAT",
    "MONTHS",
    "NUMBER_FORMAT",
    "WEEKDAYS",
    "SolvedTask",
    "default_task_suite",
    "generate_solved",
    "generate_tasks",
    "main",
    "split_of",
]


if __name__ == "__main__":  # python -m crescade.tasks, as documented
    raise SystemExit(main())
