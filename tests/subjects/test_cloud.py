"""S3 and SQS through the shop's cloud services, live against labkit's AWS emulator.

The seed's LocalStack tests, on whatever `services.get("aws")` provides (moto's
server locally, a container, or LABKIT_AWS_URL). Names are unique per test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from typing import Any

import pytest

from labkit.services import Endpoint
from labkit.subjects.cloud import AwsConfig, CloudError, QueueService, StorageService

# Until labkit.plugin_aws is registered as a pytest11 plugin.


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def storage(s3_client: Any) -> StorageService:
    return StorageService(s3_client)


@pytest.fixture
def queues(sqs_client: Any) -> QueueService:
    return QueueService(sqs_client)


def test_the_emulator_is_a_real_http_server(aws: Endpoint) -> None:
    assert aws.url.startswith("http://")
    assert aws.extra["region"] == "us-east-1"


def test_upload_and_retrieve_a_file(storage: StorageService, s3_client: Any) -> None:
    bucket = unique("test-bucket")
    storage.create_bucket(bucket)
    try:
        location = storage.upload(bucket, "test-file.txt", b"Hello, World!", "text/plain")
        assert location.endswith(f"/{bucket}/test-file.txt")

        assert storage.download(bucket, "test-file.txt") == b"Hello, World!"
        head = s3_client.head_object(Bucket=bucket, Key="test-file.txt")
        assert head["ContentType"] == "text/plain"

        storage.delete_object(bucket, "test-file.txt")
        assert storage.list_keys(bucket) == []
        storage.delete_bucket(bucket)
    finally:
        _remove_bucket(s3_client, bucket)

    assert bucket not in [b["Name"] for b in s3_client.list_buckets()["Buckets"]]


def _remove_bucket(s3_client: Any, bucket: str) -> None:
    """Leave nothing behind, whether the test got to its own cleanup or not."""
    try:
        for item in s3_client.list_objects_v2(Bucket=bucket).get("Contents", []):
            s3_client.delete_object(Bucket=bucket, Key=item["Key"])
        s3_client.delete_bucket(Bucket=bucket)
    except s3_client.exceptions.NoSuchBucket:
        pass


def test_binary_content_survives_the_round_trip(storage: StorageService, s3_bucket: str) -> None:
    data = bytes(range(256)) * 100
    storage.upload(s3_bucket, "blob.bin", data)
    assert storage.download(s3_bucket, "blob.bin") == data


def test_upload_to_a_missing_bucket_says_so(storage: StorageService) -> None:
    missing = unique("no-such-bucket")
    with pytest.raises(CloudError, match=f"bucket '{missing}' does not exist: create it first"):
        storage.upload(missing, "file.txt", b"data")


def test_download_of_a_missing_key_says_so(storage: StorageService, s3_bucket: str) -> None:
    with pytest.raises(CloudError, match="no object 'nothing.txt' in bucket"):
        storage.download(s3_bucket, "nothing.txt")


def test_invalid_bucket_name_is_explained(storage: StorageService) -> None:
    # Too short. (moto accepts some names real S3 refuses, "Not_Valid" among them:
    # an emulator is faithful where it has been made faithful, not everywhere.)
    with pytest.raises(CloudError, match="not a valid bucket name"):
        storage.create_bucket("ab")


def test_a_bucket_with_objects_cannot_be_deleted(storage: StorageService, s3_bucket: str) -> None:
    storage.upload(s3_bucket, "keep.txt", b"x")
    with pytest.raises(CloudError, match=r"still holds objects \['keep.txt'\]"):
        storage.delete_bucket(s3_bucket)


def test_send_receive_and_delete_a_message(queues: QueueService, sqs_client: Any) -> None:
    queue_url = queues.create_queue(unique("test-queue"))
    try:
        message = {"id": "msg-123", "type": "order", "data": {"orderId": "order-456"}}
        queues.send_json(queue_url, message)

        received = queues.receive(queue_url)
        assert len(received) == 1
        assert received[0].body == message

        queues.delete_message(queue_url, received[0].receipt_handle)
        assert queues.receive(queue_url, wait_seconds=0) == []
    finally:
        queues.delete_queue(queue_url)

    with pytest.raises(CloudError, match="does not exist"):
        queues.send_json(queue_url, {"too": "late"})


def test_an_undeleted_message_comes_back(queues: QueueService, sqs_queue: str) -> None:
    """At-least-once: a consumer that never deletes its message will see it again."""
    queues.set_visibility_timeout(sqs_queue, 1)
    queues.send_json(sqs_queue, {"n": 1})

    first = queues.receive(sqs_queue)
    assert queues.message_counts(sqs_queue) == (0, 1), "received: in flight, not visible"
    assert queues.receive(sqs_queue, wait_seconds=0) == [], "invisible while being handled"
    again = queues.receive(sqs_queue, wait_seconds=3)

    assert [m.message_id for m in again] == [first[0].message_id]
    queues.delete_message(sqs_queue, again[0].receipt_handle)
    assert queues.message_counts(sqs_queue) == (0, 0), "deleted: gone from the queue"


def test_message_counts_tell_waiting_from_in_flight(queues: QueueService, sqs_queue: str) -> None:
    assert queues.message_counts(sqs_queue) == (0, 0)
    queues.send_json(sqs_queue, {"n": 1})
    queues.send_json(sqs_queue, {"n": 2})
    assert queues.message_counts(sqs_queue) == (2, 0)
    queues.receive(sqs_queue, max_messages=1)
    assert queues.message_counts(sqs_queue) == (1, 1)


def test_counts_of_a_missing_queue_are_explained(queues: QueueService) -> None:
    queue_url = queues.create_queue(unique("test-queue"))
    queues.delete_queue(queue_url)
    with pytest.raises(CloudError, match="does not exist"):
        queues.message_counts(queue_url)


def test_messages_must_be_json(queues: QueueService, sqs_queue: str) -> None:
    with pytest.raises(CloudError, match="not JSON-serialisable"):
        queues.send_json(sqs_queue, {"when": object()})


def test_an_unreachable_endpoint_is_explained() -> None:
    storage = StorageService(AwsConfig(endpoint_url="http://127.0.0.1:9", timeout=1.0).client("s3"))
    with pytest.raises(CloudError, match=r"cannot reach S3 at http://127.0.0.1:9 .*emulator"):
        storage.upload("any-bucket", "k", b"v")


def test_another_process_configured_by_the_environment_sees_the_same_objects(
    storage: StorageService, s3_bucket: str, aws: Endpoint
) -> None:
    extra = aws.extra
    config = AwsConfig(aws.url, extra["region"], extra["access_key"], extra["secret_key"])
    storage.upload(s3_bucket, "hello.txt", b"from the test")
    reader = (
        "import sys, boto3; s3 = boto3.client('s3'); "
        "print(s3.get_object(Bucket=sys.argv[1], Key='hello.txt')['Body'].read().decode())"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    done = subprocess.run(
        [sys.executable, "-c", reader, s3_bucket], env={**clean, **config.environment()},
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "from the test"


def test_the_environment_of_real_aws_has_no_endpoint() -> None:
    assert "AWS_ENDPOINT_URL" not in AwsConfig(endpoint_url=None).environment()
