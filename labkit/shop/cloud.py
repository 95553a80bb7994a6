"""The shop's cloud storage (S3) and queues (SQS), on any AWS-compatible endpoint.

    >>> from labkit import services
    >>> from labkit.shop.cloud import AwsConfig, QueueService, StorageService
    >>> config = AwsConfig.from_endpoint(services.get("aws"))
    >>> storage = StorageService(config.client("s3"))
    >>> storage.create_bucket("invoices")
    >>> storage.upload("invoices", "2024/1.txt", b"Hello, World!")

The code is the same against real AWS, LocalStack or moto: only `AwsConfig` changes.
Every boto3 error that a caller can cause is turned into a `CloudError` that names
the bucket or queue and says what to do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from labkit.services import Endpoint

__all__ = ["AwsConfig", "CloudError", "QueueService", "ReceivedMessage", "StorageService"]


class CloudError(RuntimeError):
    """An S3 or SQS call failed for a reason the caller can act on."""


@dataclass(frozen=True)
class AwsConfig:
    endpoint_url: str | None
    region: str = "us-east-1"
    access_key: str = "test"
    secret_key: str = "test"
    timeout: float = 5.0

    @classmethod
    def from_endpoint(cls, endpoint: Endpoint, timeout: float = 5.0) -> AwsConfig:
        """The config for labkit's `aws` service (an emulator with dummy credentials)."""
        return cls(
            endpoint_url=endpoint.url,
            region=endpoint.extra["region"],
            access_key=endpoint.extra["access_key"],
            secret_key=endpoint.extra["secret_key"],
            timeout=timeout,
        )

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


class StorageService:
    """Buckets and objects in S3."""

    def __init__(self, s3_client: Any) -> None:
        self.s3 = s3_client

    def create_bucket(self, bucket: str) -> None:
        region = self.s3.meta.region_name
        # us-east-1 is S3's default and refuses to be named as a location constraint.
        options = (
            {}
            if region == "us-east-1"
            else {"CreateBucketConfiguration": {"LocationConstraint": region}}
        )
        try:
            self.s3.create_bucket(Bucket=bucket, **options)
        except ClientError as exc:
            if _error_code(exc) == "InvalidBucketName":
                raise CloudError(
                    f"{bucket!r} is not a valid bucket name: use 3-63 lowercase letters, "
                    "digits, dots or hyphens, starting and ending with a letter or digit"
                ) from None
            raise self._explain(exc, bucket) from None

    def delete_bucket(self, bucket: str) -> None:
        """Delete an *empty* bucket."""
        try:
            self.s3.delete_bucket(Bucket=bucket)
        except ClientError as exc:
            if _error_code(exc) == "BucketNotEmpty":
                raise CloudError(
                    f"bucket {bucket!r} still holds objects {self.list_keys(bucket)[:5]}: "
                    "delete them first"
                ) from None
            raise self._explain(exc, bucket) from None

    def upload(
        self,
        bucket: str,
        key: str,
        data: bytes,
        content_type: str = "application/octet-stream",
    ) -> str:
        """Store `data` under `key`; returns the object's URL."""
        try:
            self.s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)
        except ClientError as exc:
            raise self._explain(exc, bucket, key) from None
        return f"{self.s3.meta.endpoint_url}/{bucket}/{key}"

    def download(self, bucket: str, key: str) -> bytes:
        try:
            response = self.s3.get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            raise self._explain(exc, bucket, key) from None
        return response["Body"].read()

    def delete_object(self, bucket: str, key: str) -> None:
        try:
            self.s3.delete_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            raise self._explain(exc, bucket, key) from None

    def list_keys(self, bucket: str) -> list[str]:
        try:
            pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            return [item["Key"] for page in pages for item in page.get("Contents", [])]
        except ClientError as exc:
            raise self._explain(exc, bucket) from None

    @staticmethod
    def _explain(exc: ClientError, bucket: str, key: str | None = None) -> CloudError:
        code = _error_code(exc)
        if code == "NoSuchBucket":
            return CloudError(f"bucket {bucket!r} does not exist: create it first")
        if code in ("NoSuchKey", "404"):
            return CloudError(f"no object {key!r} in bucket {bucket!r}")
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

    def create_queue(self, name: str) -> str:
        """Create the queue (or find it, if it exists with the same attributes); its URL."""
        try:
            return self.sqs.create_queue(QueueName=name)["QueueUrl"]
        except ClientError as exc:
            raise CloudError(f"could not create queue {name!r}: {exc}") from None

    def delete_queue(self, queue_url: str) -> None:
        try:
            self.sqs.delete_queue(QueueUrl=queue_url)
        except ClientError as exc:
            raise self._explain(exc, queue_url) from None

    def send_json(self, queue_url: str, message: Any) -> str:
        """Send `message` as JSON; returns SQS's message id."""
        try:
            body = json.dumps(message)
        except TypeError as exc:
            raise CloudError(f"message is not JSON-serialisable: {exc}") from None
        try:
            return self.sqs.send_message(QueueUrl=queue_url, MessageBody=body)["MessageId"]
        except ClientError as exc:
            raise self._explain(exc, queue_url) from None

    def receive(
        self, queue_url: str, max_messages: int = 10, wait_seconds: int = 1
    ) -> list[ReceivedMessage]:
        """Up to `max_messages` messages, long-polling up to `wait_seconds` for the first.

        A received message stays in the queue, invisible for a while: `delete_message`
        it once handled, or it comes back (at-least-once delivery).
        """
        try:
            response = self.sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=max_messages, WaitTimeSeconds=wait_seconds
            )
        except ClientError as exc:
            raise self._explain(exc, queue_url) from None
        return [
            ReceivedMessage(
                body=json.loads(m["Body"]),
                message_id=m["MessageId"],
                receipt_handle=m["ReceiptHandle"],
            )
            for m in response.get("Messages", [])
        ]

    def delete_message(self, queue_url: str, receipt_handle: str) -> None:
        try:
            self.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=receipt_handle)
        except ClientError as exc:
            raise self._explain(exc, queue_url) from None

    @staticmethod
    def _explain(exc: ClientError, queue_url: str) -> CloudError:
        if "NonExistentQueue" in _error_code(exc) or "QueueDoesNotExist" in _error_code(exc):
            return CloudError(f"queue {queue_url} does not exist: create it first")
        return CloudError(f"SQS refused the request on {queue_url}: {exc}")
