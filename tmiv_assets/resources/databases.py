"""The PostgreSQL profile: one server URL (TMIV_DATABASE_URL, the Dagster instance's database) from which MLflow's
store and the Optuna studies get databases of their own on the same server, created on first use.

The URL names the psycopg2 driver (`postgresql+psycopg2://`): dagster-postgres relies on psycopg2's client-side
parameters, and SQLAlchemy 2.1 would otherwise pick psycopg 3 for a bare `postgresql://`.

Separate databases, not one shared schema: MLflow and Dagster both own a table called `runs`."""

from __future__ import annotations

import functools

import psycopg2
from psycopg2 import errors, sql
from sqlalchemy.engine import make_url

DRIVER = "postgresql+psycopg2"


def check_database_url(database_url: str) -> str:
    url = make_url(database_url)
    if url.drivername != DRIVER or not url.database:
        raise ValueError(f"TMIV_DATABASE_URL must look like {DRIVER}://user:password@host:5432/tmiv (the psycopg2 "
                         f"driver and a database name), got {url.render_as_string(hide_password=True)}")
    return database_url


@functools.cache
def sibling_database(database_url: str, purpose: str) -> str:
    """The URL of database `<name>_<purpose>` beside the one `database_url` names, created if it is missing."""
    url = make_url(check_database_url(database_url))
    sibling = url.set(database=f"{url.database}_{purpose}")
    try:
        connection = psycopg2.connect(host=url.host, port=url.port, user=url.username, password=url.password,
                                      dbname=url.database, connect_timeout=10)
    except psycopg2.OperationalError as error:
        raise ConnectionError(f"PostgreSQL at {url.render_as_string(hide_password=True)} (TMIV_DATABASE_URL) is "
                              f"unreachable: {str(error).strip()}; start the server or fix the URL") from error
    connection.autocommit = True  # CREATE DATABASE cannot run inside a transaction
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (sibling.database,))
            if cursor.fetchone() is None:
                try:
                    cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(sibling.database)))
                except (errors.DuplicateDatabase, errors.UniqueViolation):
                    pass  # another process created it between the check and the statement
    finally:
        connection.close()
    return sibling.render_as_string(hide_password=False)
