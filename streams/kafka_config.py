"""Kafka security settings → aiokafka client keyword arguments.

One mapping shared by every aiokafka client the project builds (demo producer, benchmark, worker
side clients), so SASL/TLS is configured once, the usual way (SPEC section 5), through
`SALESPULSE_KAFKA_*` settings.
"""

from __future__ import annotations

from typing import Any

from aiokafka.helpers import create_ssl_context

from streams.settings import Settings

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def kafka_client_kwargs(settings: Settings) -> dict[str, Any]:
    """Security keyword arguments for `AIOKafkaProducer` / `AIOKafkaConsumer` / admin clients.

    `bootstrap_servers` is deliberately not included: callers pass it themselves (some take it
    from elsewhere, e.g. a benchmark's broker), and a duplicate keyword would be an error.
    Raises ValueError for settings that could only fail later, at connection time.
    """
    protocol = settings.kafka_security_protocol.upper()
    if protocol not in PROTOCOLS:
        raise ValueError(
            f"SALESPULSE_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol!r}: "
            f"expected one of {', '.join(PROTOCOLS)}"
        )
    kwargs: dict[str, Any] = {"security_protocol": protocol}
    if protocol.startswith("SASL_"):
        mechanism = settings.kafka_sasl_mechanism.upper()
        if mechanism not in SASL_MECHANISMS:
            raise ValueError(
                f"SALESPULSE_KAFKA_SASL_MECHANISM={settings.kafka_sasl_mechanism!r}: "
                f"expected one of {', '.join(SASL_MECHANISMS)}"
            )
        if not settings.kafka_sasl_username or settings.kafka_sasl_password is None:
            raise ValueError(f"{protocol} needs SALESPULSE_KAFKA_SASL_USERNAME and _PASSWORD")
        # aiokafka takes the SCRAM credentials through the same two arguments as PLAIN
        kwargs["sasl_mechanism"] = mechanism
        kwargs["sasl_plain_username"] = settings.kafka_sasl_username
        kwargs["sasl_plain_password"] = settings.kafka_sasl_password
    if protocol.endswith("SSL"):
        kwargs["ssl_context"] = create_ssl_context(
            cafile=settings.kafka_ssl_cafile,
            certfile=settings.kafka_ssl_certfile,
            keyfile=settings.kafka_ssl_keyfile,
        )
    return kwargs
