-- The embedded store (schema version 4). One table per kind of document, each with a
-- full-text index. `seq` orders documents as they arrived; `ts` is @timestamp in microseconds
-- since the epoch.
--
-- `record` is one zstd-compressed blob (records.py; a dictionary per kind, trained on the
-- table's own rows, in `dictionaries`) of three parts:
--   `doc`       the document's JSON (ECS field names) WITHOUT what is kept once elsewhere:
--   `original`  event.original, the raw record byte for byte (events and alerts);
--   `audit`     kubernetes.audit: none when the document has none, '' when it is exactly
--               json(original) (an audit-log line: the store rebuilds it from `original` on
--               read, instead of keeping the raw record twice), else its own JSON (EventList
--               items, AKS/GKE envelopes, redacted events: what was parsed is not the line);
--   alerts.original_of   the id of the stored event whose `original` this alert's is (an alert
--               repeats its triggering event's raw record): the alert's `original` is then none.
-- The store puts those fields back in their place on read, so `search` returns the documents
-- as the bus carried them. SQL reads the parts with ct_doc(record), ct_original(record) and
-- ct_audit(record), functions the store registers on its connection.
--
-- Hot fields are real columns, declared without a type (no affinity: a value stays as the
-- JSON had it, as json_extract would read it), filled at insert from the item (search.py's
-- HOT maps ECS field names to them); each has a partial index (column, ts), so an equality is
-- an index range in time order and `ORDER BY ts DESC LIMIT n` stops early. Every other field
-- is a JSON path into `doc` (or into the audit record, for kubernetes.audit.*).
--
-- Free text (`*_text`, contentless FTS5, one `body` per document) is built at insert from
-- fields chosen once (store.py, *_text functions), not from the whole record:
--   events:  message; event.action/dataset/outcome; tags; user.name, related.user/ip,
--            source.ip, user_agent; kubernetes namespace/pod/node/container names;
--            container id/name/image name and tags; orchestrator resource type/name/namespace
--            and the workload (containertrail.*); who deployed it, who pushed its image;
--            host.name; process name/executable/command lines; rule id/name (Falco);
--            registry repository/tag/digest/host; docker type/actor and attributes;
--            falco output and rule;
--            from kubernetes.audit: requestURI (an exec's command is in it), verb, the user,
--            impersonated user and their groups, userAgent, objectRef (resource, subresource,
--            name, namespace, apiGroup), responseStatus reason/message, annotation values
--            (the RBAC reason), and from requestObject the containers' names, images,
--            commands and args (pod spec or a workload's template) and a binding's roleRef
--            and subjects;
--            event.original itself only for events that have neither a message nor an audit
--            record (docker and registry events: the raw record is their only text).
--   alerts:  rule id/name/description, threat technique ids and tactic names, alert
--            severity and group key, tags, and the entities (user, source, namespace, pod,
--            container, image, resource) — not the triggering raw record, which the event's
--            own text index holds.
--   dead letters: stage, reason, detail, dataset, origin, and the record as received (it is
--            their only text); replay verdicts: dead letter id, stage, outcome, reason,
--            successor.

CREATE TABLE IF NOT EXISTS events (
    seq            INTEGER PRIMARY KEY,
    id             TEXT NOT NULL UNIQUE,
    ts             INTEGER NOT NULL,
    action,                     -- event.action
    user_name,                     -- user.name
    namespace,                     -- kubernetes.namespace
    source_ip,                     -- source.ip
    container_id,                     -- container.id
    pod_name,                     -- kubernetes.pod.name
    resource_type,                     -- orchestrator.resource.type
    dataset,                     -- event.dataset
    outcome,                     -- event.outcome
    record         BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
CREATE INDEX IF NOT EXISTS events_action ON events (action, ts) WHERE action IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_user ON events (user_name, ts) WHERE user_name IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_namespace ON events (namespace, ts) WHERE namespace IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_source_ip ON events (source_ip, ts) WHERE source_ip IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_container ON events (container_id, ts) WHERE container_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_pod ON events (pod_name, ts) WHERE pod_name IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_resource ON events (resource_type, ts) WHERE resource_type IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_dataset ON events (dataset, ts) WHERE dataset IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_outcome ON events (outcome, ts) WHERE outcome IS NOT NULL;
CREATE VIRTUAL TABLE IF NOT EXISTS events_text USING fts5 (body, content = '', columnsize = 0);

CREATE TABLE IF NOT EXISTS alerts (
    seq            INTEGER PRIMARY KEY,
    id             TEXT NOT NULL UNIQUE,
    ts             INTEGER NOT NULL,
    rule_id,                     -- rule.id
    severity,                     -- alert.severity
    user_name,                     -- user.name
    namespace,                     -- kubernetes.namespace
    container_id,                     -- container.id
    pod_name,                     -- kubernetes.pod.name
    original_of    TEXT,
    record         BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_ts ON alerts (ts);
CREATE INDEX IF NOT EXISTS alerts_rule ON alerts (rule_id, ts) WHERE rule_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS alerts_user ON alerts (user_name, ts) WHERE user_name IS NOT NULL;
CREATE INDEX IF NOT EXISTS alerts_namespace ON alerts (namespace, ts) WHERE namespace IS NOT NULL;
CREATE INDEX IF NOT EXISTS alerts_container ON alerts (container_id, ts) WHERE container_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS alerts_pod ON alerts (pod_name, ts) WHERE pod_name IS NOT NULL;
CREATE VIRTUAL TABLE IF NOT EXISTS alerts_text USING fts5 (body, content = '', columnsize = 0);

CREATE TABLE IF NOT EXISTS dead_letters (
    seq            INTEGER PRIMARY KEY,
    id             TEXT NOT NULL UNIQUE,
    ts             INTEGER NOT NULL,
    reason,                     -- reason
    stage,                     -- stage
    record         BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_ts ON dead_letters (ts);
CREATE INDEX IF NOT EXISTS dead_letters_reason ON dead_letters (reason, ts) WHERE reason IS NOT NULL;
CREATE VIRTUAL TABLE IF NOT EXISTS dead_letters_text USING fts5 (body, content = '', columnsize = 0);

-- `ctrail dlq replay`'s verdicts on dead letters that no longer stand (since schema 2).
CREATE TABLE IF NOT EXISTS dead_letter_replays (
    seq            INTEGER PRIMARY KEY,
    id             TEXT NOT NULL UNIQUE,
    ts             INTEGER NOT NULL,
    dead_letter_id,                     -- dead_letter_id
    record         BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letter_replays_ts ON dead_letter_replays (ts);
CREATE INDEX IF NOT EXISTS dead_letter_replays_of
    ON dead_letter_replays (dead_letter_id, ts) WHERE dead_letter_id IS NOT NULL;
CREATE VIRTUAL TABLE IF NOT EXISTS dead_letter_replays_text USING fts5 (body, content = '', columnsize = 0);

-- zstd dictionaries of the records (records.py), one per kind once it has rows to train on.
CREATE TABLE IF NOT EXISTS dictionaries (
    id             INTEGER PRIMARY KEY,
    kind           TEXT NOT NULL,
    data           BLOB NOT NULL
);
