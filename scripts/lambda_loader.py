"""Import the Lambda functions' code as the runtime does: for the tests, benchmarks and local runs.

In the zip, `handler.py` and its sibling modules sit at the root (`/var/task`, on the
runtime's sys.path) and the handler is imported as the top-level module `handler`.
Here they are in lambda/, a folder and not a package (`lambda` is a keyword).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import secrets
import sys
from pathlib import Path
from types import ModuleType

LAMBDA_DIR = Path(__file__).resolve().parent.parent / "lambda"
HANDLER_PATH = LAMBDA_DIR / "handler.py"


def load_handler(name: str = "handler") -> ModuleType:
    """Import lambda/handler.py afresh as the module `name`, with lambda/ on sys.path.

    `name` is `handler` for a run like the runtime's; a new name gives a new execution
    environment (module-scope Database, logger, metrics) in the same process, as the tests
    use. The module is registered in sys.modules under `name`, as an import would do
    (dataclasses and pickle look a class's module up there); the siblings import once
    and are shared, which they can be: they keep no state.
    """
    _on_path()
    spec = importlib.util.spec_from_file_location(name, HANDLER_PATH)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {HANDLER_PATH}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def load_fresh_handler() -> ModuleType:
    """lambda/handler.py under a unique name: a new execution environment.

    Its Powertools service name (POWERTOOLS_SERVICE_NAME while it imports) is that name
    too: Powertools keeps one log handler per service name, bound to the sys.stdout of
    the moment it is made, so a load that logs to the current stdout (pytest's capture,
    a drill's log file) needs a name of its own. `unload` ends it.
    """
    name = f"lambda_handler_{secrets.token_hex(4)}"
    saved = os.environ.get("POWERTOOLS_SERVICE_NAME")
    os.environ["POWERTOOLS_SERVICE_NAME"] = name
    try:
        return load_handler(name)
    finally:
        if saved is None:
            del os.environ["POWERTOOLS_SERVICE_NAME"]
        else:
            os.environ["POWERTOOLS_SERVICE_NAME"] = saved


def unload(module: ModuleType) -> None:
    """End a loaded handler's execution environment: dispose of its Database, drop its log
    handler, and forget the module."""
    database = module.set_database(None)
    if database is not None:
        database.dispose()
    logging.getLogger(module.logger.service).handlers.clear()
    sys.modules.pop(module.__name__, None)


def function_module(name: str) -> ModuleType:
    """One of the modules beside handler.py (`stock_batch`, `report_io`, ...), as it imports
    in the zip: a top-level module, imported once per process."""
    _on_path()
    return importlib.import_module(name)


def _on_path() -> None:
    if str(LAMBDA_DIR) not in sys.path:
        sys.path.insert(0, str(LAMBDA_DIR))
