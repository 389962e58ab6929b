-- The embedded store. One table per kind of document, each with a full-text index.
-- `seq` orders documents as they arrived; `ts` is @timestamp in microseconds since the epoch;
-- `doc` is the document's JSON exactly as the bus carried it (ECS field names).
-- Expression indexes cover the fields that forensic searches filter on most.

CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    id  TEXT NOT NULL UNIQUE,
    ts  INTEGER NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
CREATE INDEX IF NOT EXISTS events_action ON events (json_extract(doc, '$.event.action'));
CREATE INDEX IF NOT EXISTS events_user ON events (json_extract(doc, '$.user.name'));
CREATE INDEX IF NOT EXISTS events_namespace ON events (json_extract(doc, '$.kubernetes.namespace'));
CREATE INDEX IF NOT EXISTS events_source_ip ON events (json_extract(doc, '$.source.ip'));
CREATE INDEX IF NOT EXISTS events_container ON events (json_extract(doc, '$.container.id'));
CREATE INDEX IF NOT EXISTS events_pod ON events (json_extract(doc, '$.kubernetes.pod.name'));
CREATE INDEX IF NOT EXISTS events_resource ON events (json_extract(doc, '$.orchestrator.resource.type'));
-- Free text: every string of the document except event.original (it repeats the rest).
CREATE VIRTUAL TABLE IF NOT EXISTS events_text USING fts5 (body, content = '');

CREATE TABLE IF NOT EXISTS alerts (
    seq INTEGER PRIMARY KEY,
    id  TEXT NOT NULL UNIQUE,
    ts  INTEGER NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_ts ON alerts (ts);
CREATE INDEX IF NOT EXISTS alerts_rule ON alerts (json_extract(doc, '$.rule.id'));
CREATE VIRTUAL TABLE IF NOT EXISTS alerts_text USING fts5 (body, content = '');

CREATE TABLE IF NOT EXISTS dead_letters (
    seq INTEGER PRIMARY KEY,
    id  TEXT NOT NULL UNIQUE,
    ts  INTEGER NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_ts ON dead_letters (ts);
CREATE INDEX IF NOT EXISTS dead_letters_reason ON dead_letters (json_extract(doc, '$.reason'));
CREATE VIRTUAL TABLE IF NOT EXISTS dead_letters_text USING fts5 (body, content = '');

-- `ctrail dlq replay`'s verdicts on dead letters that no longer stand (schema version 2).
CREATE TABLE IF NOT EXISTS dead_letter_replays (
    seq INTEGER PRIMARY KEY,
    id  TEXT NOT NULL UNIQUE,
    ts  INTEGER NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letter_replays_ts ON dead_letter_replays (ts);
CREATE INDEX IF NOT EXISTS dead_letter_replays_of
    ON dead_letter_replays (json_extract(doc, '$.dead_letter_id'));
CREATE VIRTUAL TABLE IF NOT EXISTS dead_letter_replays_text USING fts5 (body, content = '');
