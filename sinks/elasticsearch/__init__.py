"""The Elasticsearch store: data streams per dataset and data class, ECS templates and ILM policies
installed at startup, idempotent writes, and the search language of ctrail.query.

Roles: config (ElasticsearchConfig), documents (items as bulk actions), bulk (the write path),
outcome (what a bulk item result means), templates (templates and policies; JSON in templates/),
search (query tree to DSL), store (the Store protocol over one client). Only this package
imports `elasticsearch`; config does not, and store (which does) is imported only by
ElasticsearchConfig.build, so `import sinks` needs neither the client nor a server.
"""

from sinks.elasticsearch.config import ElasticsearchConfig, RetentionConfig

__all__ = ["ElasticsearchConfig", "RetentionConfig"]
