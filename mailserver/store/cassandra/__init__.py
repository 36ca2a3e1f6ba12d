"""Apache Cassandra metadata store: schema, migrations, driver bridge, stores."""

from mailserver.store.cassandra.schema import SCHEMA_VERSION, init_schema

__all__ = ["SCHEMA_VERSION", "init_schema"]
