"""Which database errors are configuration (no retry cures them) and which may pass by themselves."""

from __future__ import annotations

import pytest

from shared.ledger.db import connection_refusal as refusal

SERVER = 'connection failed: connection to server at "10.0.0.5", port 5432 failed: FATAL:  '


class _Driver(Exception):
    """A DB-API error as psycopg raises it; ``sqlstate`` is None for a refused connection."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ('password authentication failed for user "relance"', "wrong password for role relance"),
        ('role "relance" does not exist', "role relance does not exist"),
        ('role "relance" is not permitted to log in', "role relance may not log in"),
        (
            'no pg_hba.conf entry for host "10.0.0.9", user "relance", database "relance", no encryption',
            "pg_hba.conf lets no such role relance in",
        ),
        ('database "relance" does not exist', "database relance does not exist"),
        ('permission denied for database "relance"', "the role may not connect to database relance"),
    ],
)
def test_a_server_refusing_the_role_or_the_database_is_configuration(message: str, reason: str) -> None:
    assert refusal(_Driver(SERVER + message)) == reason


def test_a_refusal_known_by_its_sqlstate_is_configuration_in_any_language() -> None:
    assert (
        refusal(_Driver("FATAL:  l'authentification par mot de passe a échoué", sqlstate="28P01")) == "wrong password"
    )


@pytest.mark.parametrize(
    "message",
    [
        'connection to server at "10.0.0.5", port 5432 failed: Connection refused',
        SERVER + "the database system is starting up",
        SERVER + "sorry, too many clients already",
        'connection to server at "10.0.0.5", port 5432 failed: timeout expired',
    ],
)
def test_a_server_that_is_down_or_busy_is_not_configuration(message: str) -> None:
    assert refusal(_Driver(message)) is None
