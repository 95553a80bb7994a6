"""Cloud storage (S3) and queues (SQS), on any AWS-compatible endpoint: lesson 08's subject.

    >>> from labkit.subjects.cloud import AwsConfig, QueueService, StorageService
    >>> config = AwsConfig("http://127.0.0.1:4566", region="us-east-1")
    >>> storage = StorageService(config.client("s3"))
    >>> storage.create_bucket("invoices")
    >>> storage.upload("invoices", "2024/1.txt", b"Hello, World!")

The code is the same against real AWS, LocalStack or moto: only `AwsConfig` changes.
Every boto3 error that a caller can cause is turned into a `CloudError` that names
the bucket or queue and says what to do.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

__all__ = ["AwsConfig", "CloudError", "QueueService", "ReceivedMessage", "StorageService"]


class CloudError(RuntimeError):
    """An S3 or SQS call failed for a reason the caller can act on."""


@dataclass(frozen=True)
class AwsConfig:
    """Where and as whom to call AWS: an endpoint URL (None for real AWS), region, keys.

    For labkit's `aws` emulator, take them from its endpoint: ``AwsConfig(aws.url,
    aws.extra["region"], aws.extra["access_key"], aws.extra["secret_key"])``.
    """

    endpoint_url: str | None
    region: str = "us-east-1"
    access_key: str = "test"
    secret_key: str = "test"
    timeout: float = 5.0

    def environment(self) -> dict[str, str]:
        """The standard ``AWS_*`` variables for this configuration: what a separate process
        (a worker, the ``aws`` CLI, a plain ``boto3.client("s3")``) reads when it is given
        no configuration of its own. No ``AWS_ENDPOINT_URL`` for real AWS."""
        variables = {
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }
        if self.endpoint_url:
            variables["AWS_ENDPOINT_URL"] = self.endpoint_url
        return variables

    def client(self, service: str) -> Any:
        """A boto3 client for `service` ("s3", "sqs", …) with bounded timeouts."""
        return boto3.client(
            service,
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(
                connect_timeout=self.timeout,
                read_timeout=self.timeout,
                # botocore retries throttling and 5xx by itself; two attempts is plenty
                # for tests, and keeps a dead endpoint from taking 20 s to report.
                retries={"max_attempts": 2, "mode": "standard"},
            ),
        )


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextmanager
def _unreachable_is_explained(client: Any) -> Iterator[None]:
    try:
        yield
    except (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError) as exc:
        raise CloudError(
            f"cannot reach {client.meta.service_model.service_name.upper()} at "
            f"{client.meta.endpoint_url} ({exc.__class__.__name__}): is the emulator running? "
            "In a lesson, take the endpoint from the `aws` fixture (or services.get('aws'))"
        ) from None


class StorageService:
    """Buckets and objects in S3."""

    def __init__(self, s3_client: Any) -> None:
        self.s3 = s3_client

    @contextmanager
    def _explained(self, bucket: str, key: str | None = None) -> Iterator[None]:
        """Turn boto3's errors into CloudErrors that name the bucket and say what to do."""
        with _unreachable_is_explained(self.s3):
            try:
                yield
            except ClientError as exc:
                raise self._explain(exc, bucket, key) from None

    def create_bucket(self, bucket: str) -> None:
        region = self.s3.meta.region_name
        # us-east-1 is S3's default and refuses to be named as a location constraint.
        location = {"LocationConstraint": region}
        options = {} if region == "us-east-1" else {"CreateBucketConfiguration": location}
        with self._explained(bucket):
            self.s3.create_bucket(Bucket=bucket, **options)

    def delete_bucket(self, bucket: str) -> None:
        """Delete an *empty* bucket."""
        with self._explained(bucket):
            self.s3.delete_bucket(Bucket=bucket)

    def upload(
        self,
        bucket: str,
        key: str,
        data: bytes,
        content_type: str = "application/octet-stream",
    ) -> str:
        """Store `data` under `key`; returns the object's URL."""
        with self._explained(bucket, key):
            self.s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)
        return f"{self.s3.meta.endpoint_url}/{bucket}/{key}"

    def download(self, bucket: str, key: str) -> bytes:
        with self._explained(bucket, key):
            return self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()

    def delete_object(self, bucket: str, key: str) -> None:
        with self._explained(bucket, key):
            self.s3.delete_object(Bucket=bucket, Key=key)

    def list_keys(self, bucket: str) -> list[str]:
        with self._explained(bucket):
            pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def _explain(self, exc: ClientError, bucket: str, key: str | None) -> CloudError:
        code = _error_code(exc)
        if code == "NoSuchBucket":
            return CloudError(f"bucket {bucket!r} does not exist: create it first")
        if code in ("NoSuchKey", "404"):
            return CloudError(f"no object {key!r} in bucket {bucket!r}")
        if code == "InvalidBucketName":
            return CloudError(
                f"{bucket!r} is not a valid bucket name: use 3-63 lowercase letters, "
                "digits, dots or hyphens, starting and ending with a letter or digit"
            )
        if code == "BucketNotEmpty":
            return CloudError(
                f"bucket {bucket!r} still holds objects {self.list_keys(bucket)[:5]}: "
                "delete them first"
            )
        if code == "BucketAlreadyOwnedByYou":
            return CloudError(f"bucket {bucket!r} already exists (and is yours)")
        return CloudError(f"S3 refused the request on bucket {bucket!r}: {exc}")


@dataclass(frozen=True)
class ReceivedMessage:
    body: Any
    message_id: str
    receipt_handle: str


class QueueService:
    """SQS queues carrying JSON messages."""

    def __init__(self, sqs_client: Any) -> None:
        self.sqs = sqs_client

    @contextmanager
    def _explained(self, queue: str) -> Iterator[None]:
        """Turn boto3's errors into CloudErrors that name the queue and say what to do."""
        with _unreachable_is_explained(self.sqs):
            try:
                yield
            except ClientError as exc:
                code = _error_code(exc)
                if "NonExistentQueue" in code or "QueueDoesNotExist" in code:
                    raise CloudError(f"queue {queue} does not exist: create it first") from None
                raise CloudError(f"SQS refused the request on {queue}: {exc}") from None

    def create_queue(self, name: str) -> str:
        """Create the queue (or find it, if it exists with the same attributes); its URL."""
        with self._explained(name):
            return self.sqs.create_queue(QueueName=name)["QueueUrl"]

    def set_visibility_timeout(self, queue_url: str, seconds: int) -> None:
        """How long a received message stays hidden before SQS delivers it again (30 s by
        default): a test sets it short to see a redelivery within its patience."""
        with self._explained(queue_url):
            self.sqs.set_queue_attributes(
                QueueUrl=queue_url, Attributes={"VisibilityTimeout": str(seconds)}
            )

    def message_counts(self, queue_url: str) -> tuple[int, int]:
        """(visible, in flight): messages waiting, and received but not deleted yet.

        SQS calls both counts approximate; an emulator's are exact, which is what lets a
        test assert a queue is really empty.
        """
        with self._explained(queue_url):
            attributes = self.sqs.get_queue_attributes(
                QueueUrl=queue_url,
                AttributeNames=[
                    "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"
                ],
            )["Attributes"]
        return (
            int(attributes["ApproximateNumberOfMessages"]),
            int(attributes["ApproximateNumberOfMessagesNotVisible"]),
        )

    def delete_queue(self, queue_url: str) -> None:
        with self._explained(queue_url):
            self.sqs.delete_queue(QueueUrl=queue_url)

    def send_json(self, queue_url: str, message: Any) -> str:
        """Send `message` as JSON; returns SQS's message id."""
        try:
            body = json.dumps(message)
        except TypeError as exc:
            raise CloudError(f"message is not JSON-serialisable: {exc}") from None
        with self._explained(queue_url):
            return self.sqs.send_message(QueueUrl=queue_url, MessageBody=body)["MessageId"]

    def receive(
        self, queue_url: str, max_messages: int = 10, wait_seconds: int = 1
    ) -> list[ReceivedMessage]:
        """Up to `max_messages` messages, long-polling up to `wait_seconds` for the first.

        A received message stays in the queue, invisible for a while: `delete_message`
        it once handled, or it comes back (at-least-once delivery).
        """
        with self._explained(queue_url):
            response = self.sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=max_messages, WaitTimeSeconds=wait_seconds
            )
        return [
            ReceivedMessage(
                body=json.loads(m["Body"]),
                message_id=m["MessageId"],
                receipt_handle=m["ReceiptHandle"],
            )
            for m in response.get("Messages", [])
        ]

    def delete_message(self, queue_url: str, receipt_handle: str) -> None:
        with self._explained(queue_url):
            self.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=receipt_handle)
