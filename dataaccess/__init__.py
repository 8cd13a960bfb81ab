"""Shared data-access layer for Aurora PostgreSQL with RDS IAM authentication.

The public API: `Settings` (`Settings.from_env()`, `SettingsError`),
`create_engine(settings)` and `Database` (`Database.from_settings(settings)`,
`unit_of_work()` giving a `UnitOfWork`, `ping()`, `dispose()`); the business rules
are `dataaccess.services`.
"""

from .database import Database
from .engine import create_engine
from .settings import Settings, SettingsError
from .uow import UnitOfWork

__all__ = ["Database", "Settings", "SettingsError", "UnitOfWork", "create_engine"]
