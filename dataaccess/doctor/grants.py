"""The privileges migrations 0002-0006 give the two IAM login roles, and the ones they
make sure those roles never hold; compared with what the server says the roles hold.

The expectations are restated here rather than imported from the migrations: a
migration keeps meaning what it meant when it ran, and this is the contract
today's code relies on. `tests/integration/test_least_privilege.py` checks the
same grants statement by statement.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Connection

# Every table privilege PostgreSQL 15+ knows (MAINTAIN, 17+, is left out: older
# servers reject the word).
TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")


@dataclass(frozen=True)
class Expected:
    """What one role must hold; anything else on the public schema it must not."""

    role: str
    tables: Mapping[str, frozenset[str]]
    update_columns: Mapping[str, frozenset[str]] = field(default_factory=dict)
    sequences: frozenset[str] = frozenset()  # USAGE and SELECT, never UPDATE (setval)


def app_role(role: str) -> Expected:
    """The application's writer role (DB_IAM_USER): 0002 created it, 0003-0005 narrowed it."""
    read_insert = frozenset({"SELECT", "INSERT"})
    return Expected(
        role=role,
        tables=dict.fromkeys(
            ("customers", "products", "orders", "order_lines", "stock_events"), read_insert
        ),
        # 0005: UPDATE on the columns the code changes only; 0004: no DELETE on the ledger.
        update_columns={
            "orders": frozenset({"status", "cancelled_at"}),
            "products": frozenset({"name", "price_cents", "stock", "updated_at"}),
        },
        sequences=frozenset(
            {"customers_id_seq", "products_id_seq", "orders_id_seq", "order_lines_id_seq"}
        ),
    )


def reader_role(role: str) -> Expected:
    """The report's read-only role (DB_IAM_READER_USER), from 0006: SELECT on two tables."""
    return Expected(role=role, tables=dict.fromkeys(("products", "orders"), frozenset({"SELECT"})))


ROLE = sa.text(
    "SELECT r.rolcanlogin AS can_login, "
    "r.rolsuper OR r.rolcreaterole OR r.rolcreatedb OR r.rolbypassrls AS privileged, "
    "EXISTS (SELECT FROM pg_auth_members AS m JOIN pg_roles AS g ON g.oid = m.roleid "
    "WHERE m.member = r.oid AND g.rolname = 'rds_iam') AS in_rds_iam, "
    "has_database_privilege(r.oid, current_database(), 'CONNECT') AS can_connect, "
    "has_schema_privilege(r.oid, 'public', 'USAGE') AS schema_usage, "
    "has_schema_privilege(r.oid, 'public', 'CREATE') AS schema_create "
    "FROM pg_roles AS r WHERE r.rolname = :role"
)
# One row per table and privilege: held on the whole table, and held on the whole table
# or any of its columns (the privileges a column can hold; the others only by table).
TABLES = sa.text(
    "SELECT c.relname AS table_name, p.privilege AS privilege, "
    "has_table_privilege(:role, c.oid, p.privilege) AS whole_table, "
    "CASE WHEN p.privilege IN ('SELECT', 'INSERT', 'UPDATE', 'REFERENCES') "
    "THEN has_any_column_privilege(:role, c.oid, p.privilege) "
    "ELSE has_table_privilege(:role, c.oid, p.privilege) END AS any_column "
    "FROM pg_class AS c CROSS JOIN unnest(CAST(:privileges AS text[])) AS p (privilege) "
    "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')"
)
UPDATABLE_COLUMNS = sa.text(
    "SELECT c.relname AS table_name, a.attname AS column_name "
    "FROM pg_class AS c JOIN pg_attribute AS a ON a.attrelid = c.oid "
    "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') "
    "AND a.attnum > 0 AND NOT a.attisdropped "
    "AND has_column_privilege(:role, c.oid, a.attnum, 'UPDATE')"
)
SEQUENCES = sa.text(
    "SELECT c.relname AS sequence_name, "
    "has_sequence_privilege(:role, c.oid, 'USAGE') AS can_use, "
    "has_sequence_privilege(:role, c.oid, 'SELECT') AS can_select, "
    "has_sequence_privilege(:role, c.oid, 'UPDATE') AS can_update "
    "FROM pg_class AS c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'S'"
)


@dataclass(frozen=True)
class Problem:
    """One difference from the migrations' grants, and the statement that undoes it."""

    text: str
    statement: str


def check_role(conn: Connection, expected: Expected) -> list[Problem]:
    """Every way `expected.role` differs from what the migrations grant it, first the worst."""
    role = expected.role
    quoted = _quote(conn, role)
    row = conn.execute(ROLE, {"role": role}).mappings().first()
    if row is None:
        return [Problem(f"role {role} does not exist", "alembic upgrade head (the migration task)")]
    problems: list[Problem] = []
    if not row["can_login"]:
        problems.append(Problem(f"{role} cannot log in", f"ALTER ROLE {quoted} LOGIN"))
    if not row["in_rds_iam"]:
        problems.append(Problem(f"{role} is not a member of rds_iam", f"GRANT rds_iam TO {quoted}"))
    if row["privileged"]:
        problems.append(
            Problem(
                f"{role} has administrative attributes (superuser, createrole, createdb or "
                "bypassrls), which it must not",
                f"ALTER ROLE {quoted} NOSUPERUSER NOCREATEROLE NOCREATEDB NOBYPASSRLS",
            )
        )
    if not row["can_connect"]:
        problems.append(
            Problem(
                f"{role} lacks CONNECT on this database",
                f"GRANT CONNECT ON DATABASE {_quote(conn, conn.engine.url.database)} TO {quoted}",
            )
        )
    if not row["schema_usage"]:
        problems.append(
            Problem(
                f"{role} lacks USAGE on schema public", f"GRANT USAGE ON SCHEMA public TO {quoted}"
            )
        )
    if row["schema_create"]:
        problems.append(
            Problem(
                f"{role} holds CREATE on schema public, which it must not",
                f"REVOKE CREATE ON SCHEMA public FROM {quoted}",
            )
        )
    problems += _tables(conn, expected, quoted)
    problems += _sequences(conn, expected, quoted)
    return problems


def _tables(conn: Connection, expected: Expected, quoted: str) -> list[Problem]:
    role = expected.role
    rows = conn.execute(TABLES, {"role": role, "privileges": list(TABLE_PRIVILEGES)}).mappings()
    held: dict[str, dict[str, tuple[bool, bool]]] = {}
    for row in rows:
        held.setdefault(row["table_name"], {})[row["privilege"]] = (
            row["whole_table"],
            row["any_column"],
        )
    updatable: dict[str, set[str]] = {}
    for row in conn.execute(UPDATABLE_COLUMNS, {"role": role}).mappings():
        updatable.setdefault(row["table_name"], set()).add(row["column_name"])
    problems: list[Problem] = []
    for table in sorted(set(expected.tables) - set(held)):
        problems.append(Problem(f"table {table} is missing", "alembic upgrade head"))
    for table, privileges in sorted(held.items()):
        must = expected.tables.get(table, frozenset())
        target = _quote(conn, table)
        for privilege in TABLE_PRIVILEGES:
            whole_table, any_column = privileges[privilege]
            if privilege in must and not whole_table:
                problems.append(
                    Problem(
                        f"{role} lacks {privilege} on {table}",
                        f"GRANT {privilege} ON {target} TO {quoted}",
                    )
                )
            elif privilege == "UPDATE" and table in expected.update_columns:
                problems += _update_columns(
                    role,
                    quoted,
                    table,
                    target,
                    expected.update_columns[table],
                    whole_table,
                    updatable,
                )
            elif privilege not in must and any_column:
                problems.append(
                    Problem(
                        f"{role} holds {privilege} on {table}, which it must not",
                        f"REVOKE {privilege} ON {target} FROM {quoted}",
                    )
                )
    return problems


def _update_columns(
    role: str,
    quoted: str,
    table: str,
    target: str,
    columns: frozenset[str],
    whole_table: bool,
    updatable: Mapping[str, set[str]],
) -> list[Problem]:
    if whole_table:
        return [
            Problem(
                f"{role} holds UPDATE on all of {table}, which it must not (only on "
                f"{', '.join(sorted(columns))})",
                f"REVOKE UPDATE ON {target} FROM {quoted}; "
                f"GRANT UPDATE ({', '.join(sorted(columns))}) ON {target} TO {quoted}",
            )
        ]
    have = updatable.get(table, set())
    problems = []
    if columns - have:
        missing = ", ".join(sorted(columns - have))
        problems.append(
            Problem(
                f"{role} lacks UPDATE on {table} ({missing})",
                f"GRANT UPDATE ({missing}) ON {target} TO {quoted}",
            )
        )
    if have - columns:
        extra = ", ".join(sorted(have - columns))
        problems.append(
            Problem(
                f"{role} holds UPDATE on {table} ({extra}), which it must not",
                f"REVOKE UPDATE ({extra}) ON {target} FROM {quoted}",
            )
        )
    return problems


def _sequences(conn: Connection, expected: Expected, quoted: str) -> list[Problem]:
    role = expected.role
    problems: list[Problem] = []
    for row in conn.execute(SEQUENCES, {"role": role}).mappings():
        name = row["sequence_name"]
        target = _quote(conn, name)
        if row["can_update"]:
            problems.append(
                Problem(
                    f"{role} holds UPDATE on sequence {name}, which it must not",
                    f"REVOKE UPDATE ON SEQUENCE {target} FROM {quoted}",
                )
            )
        if name in expected.sequences and not (row["can_use"] and row["can_select"]):
            problems.append(
                Problem(
                    f"{role} lacks USAGE, SELECT on sequence {name}",
                    f"GRANT USAGE, SELECT ON SEQUENCE {target} TO {quoted}",
                )
            )
        elif name not in expected.sequences and (row["can_use"] or row["can_select"]):
            problems.append(
                Problem(
                    f"{role} holds privileges on sequence {name}, which it must not",
                    f"REVOKE ALL ON SEQUENCE {target} FROM {quoted}",
                )
            )
    return problems


def _quote(conn: Connection, name: str | None) -> str:
    """`name` as it must appear in a statement (quoted only when it has to be)."""
    return conn.dialect.identifier_preparer.quote(name or "")
