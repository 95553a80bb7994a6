"""pytest fixtures for AWS-style services (S3, SQS) on labkit's `aws` emulator.

aws          the emulator's Endpoint (moto; started once per process, like postgres)
s3_client    a boto3 S3 client on it
sqs_client   a boto3 SQS client on it
s3_bucket    a fresh, uniquely named bucket, emptied and deleted after the test
sqs_queue    a fresh, uniquely named queue's URL, deleted after the test

Unique names keep tests independent of each other and of their order, even on an
emulator shared by several runs.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from labkit import services
from labkit.services import Endpoint


def aws_client(aws: Endpoint, service: str) -> Any:
    """A boto3 client for `service` ("s3", "sqs", …) on the emulator, with bounded waits.

    boto3 is imported here, by the tests that use AWS: it costs every other pytest run
    (and every %%ipytest cell's first session) a noticeable moment.
    """
    import boto3
    from botocore.config import Config

    return boto3.client(
        service,
        endpoint_url=aws.url,
        region_name=aws.extra["region"],
        aws_access_key_id=aws.extra["access_key"],
        aws_secret_access_key=aws.extra["secret_key"],
        # two attempts and 10 s: a dead emulator is reported in seconds, not minutes
        config=Config(
            connect_timeout=10, read_timeout=10, retries={"max_attempts": 2, "mode": "standard"}
        ),
    )


@pytest.fixture(scope="session")
def aws() -> Endpoint:
    """The AWS emulator's endpoint (started on first use, reused for the whole process)."""
    return services.get("aws")


@pytest.fixture(scope="session")
def s3_client(aws: Endpoint) -> Any:
    return aws_client(aws, "s3")


@pytest.fixture(scope="session")
def sqs_client(aws: Endpoint) -> Any:
    return aws_client(aws, "sqs")


@pytest.fixture
def s3_bucket(s3_client: Any) -> Iterator[str]:
    """A new empty bucket for this test; whatever the test leaves in it is removed."""
    bucket = f"labkit-test-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=bucket)
    yield bucket
    listed = s3_client.list_objects_v2(Bucket=bucket).get("Contents", [])
    for item in listed:
        s3_client.delete_object(Bucket=bucket, Key=item["Key"])
    s3_client.delete_bucket(Bucket=bucket)


@pytest.fixture
def sqs_queue(sqs_client: Any) -> Iterator[str]:
    """The URL of a new empty queue for this test, deleted afterwards."""
    url = sqs_client.create_queue(QueueName=f"labkit-test-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    yield url
    sqs_client.delete_queue(QueueUrl=url)
