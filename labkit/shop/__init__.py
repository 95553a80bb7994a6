"""The demo shop: the system under test in every lesson.

A FastAPI app over PostgreSQL, Redis and RabbitMQ, with inventory and payment
services called over HTTP. Build it against the live services of this process:

    >>> from labkit.shop.settings import settings_from_services
    >>> from labkit.shop.api import create_app
    >>> app = create_app(settings_from_services())
"""
