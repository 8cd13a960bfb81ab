"""Shared data-access layer for Aurora PostgreSQL with RDS IAM authentication.

The public API: `Settings` (`Settings.from_env()`), `create_engine(settings)` and
`Database` (`Database.from_settings(settings)`, `unit_of_work()`, `dispose()`).
"""

from .database import Database
from .engine import create_engine
from .settings import Settings, SettingsError
from .uow import UnitOfWork

__all__ = ["Database", "Settings", "SettingsError", "UnitOfWork", "create_engine"]
