"""A test that reaches PostgreSQL or RabbitMQ must carry the ``integration`` or ``e2e`` marker, or it fails at once.

``make unit`` runs ``-m "not integration and not e2e"`` without servers: a missing marker would otherwise surface only
there, as a connection error. These tests run a few tests of their own with the project's fixtures (servers pointed at
closed ports, so nothing here reaches one) and read the outcome.
"""

from pathlib import Path

import pytest

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"
INI = """
[pytest]
markers =
    integration: needs real PostgreSQL and/or RabbitMQ
    e2e: end-to-end across processes and real servers
addopts = --strict-markers -p no:cacheprovider
"""


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("RELANCE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/x")
    monkeypatch.setenv("RELANCE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/")
    pytester.makeini(INI)
    pytester.makeconftest(CONFTEST.read_text(encoding="utf-8"))
    return pytester


def test_an_unmarked_test_asking_for_a_server_fails_saying_which_marker_it_lacks(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_unmarked="""
        import pytest

        def test_database(pg_url):
            pass

        def test_broker(amqp_names):
            pass

        def test_own_server(private_postgres):
            pass

        def test_database_asked_for_late(request):
            request.getfixturevalue("pg_url")

        @pytest.mark.integration
        def test_marked(amqp_url):
            assert amqp_url.endswith(":1/")
        """
    )
    result = project.runpytest("-p", "no:playwright")  # its soft assertions refuse a run nested in ours
    result.assert_outcomes(passed=1, errors=3, failed=1)
    output = result.stdout.str()
    for test in ("test_database", "test_broker", "test_own_server", "test_database_asked_for_late"):
        assert f"test_unmarked.py::{test} uses " in output, test
    assert output.count("is not marked integration or e2e") >= 4


def test_only_the_postgresql_side_of_a_ledger_test_is_an_integration_test(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_both="""
        def test_ledger(ledger_url):
            assert ledger_url.startswith("sqlite")
        """
    )
    result = project.runpytest("-p", "no:playwright", "-m", "not integration and not e2e", "-v")
    result.assert_outcomes(passed=1, deselected=1)
    result.stdout.fnmatch_lines(["*test_ledger?sqlite? PASSED*"])
