"""The pytest plugin: fixtures isolate tests from each other on live services."""

from __future__ import annotations

import pika
import pytest
from sqlalchemy import text

pytest_plugins = ["pytester"]


class TestRedisIsolation:
    """Two tests in a row: the second must not see the first one's keys."""

    def test_writes_a_key(self, redis_client):
        redis_client.set("user:1", "cached")
        assert redis_client.get("user:1") == "cached"

    def test_sees_an_empty_database(self, redis_client):
        assert redis_client.dbsize() == 0


class TestSqlIsolation:
    def test_commits_a_row(self, db_session):
        db_session.execute(text("create table if not exists plugin_probe (note text)"))
        db_session.execute(text("insert into plugin_probe values ('left behind?')"))
        db_session.commit()

    def test_sees_nothing_of_it(self, db_session):
        exists = db_session.execute(text("select to_regclass('plugin_probe')")).scalar()
        assert exists is None


def test_amqp_queue_is_deleted_after_the_test(pytester, rabbitmq):
    pytester.makepyfile(
        """
        def test_declares(amqp_queue, amqp_channel):
            name = amqp_queue("plugin-probe")
            amqp_channel.basic_publish("", name, b"x")
        """
    )
    pytester.runpytest_inprocess("-q").assert_outcomes(passed=1)
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq.url))
    channel = connection.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="NOT_FOUND"):
        channel.queue_declare("plugin-probe", passive=True)
    connection.close()


def test_fixed_queue_name_starts_empty(amqp_queue, amqp_channel):
    name = amqp_queue("email-queue")
    assert amqp_channel.queue_declare(name, passive=True).method.message_count == 0


def test_plugin_is_registered_by_entry_point(pytester):
    pytester.makepyfile("def test_has_fixture(request):\n    request.getfixturevalue('db_session')\n")
    result = pytester.runpytest_subprocess("-q")
    result.assert_outcomes(passed=1)


def test_header_names_each_services_backend(pytester):
    result = pytester.runpytest_subprocess()
    result.stdout.fnmatch_lines(["labkit services: postgres=*, redis=*, rabbitmq=*"])
