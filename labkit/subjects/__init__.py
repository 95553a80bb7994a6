"""Small standalone subjects of lessons that are not the shop.

    labkit.subjects.rest_client   a polite client for an external REST API (lesson 07):
                                  timeouts, retries, a circuit breaker
    labkit.subjects.cloud         S3 storage and SQS queues on any AWS-compatible
                                  endpoint (lesson 08)

Import the module you need: each pulls in its own libraries (httpx, boto3), so this
package imports nothing. Neither imports labkit's kit nor the shop.
"""
