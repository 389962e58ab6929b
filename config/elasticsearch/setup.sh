#!/usr/bin/env bash
# docker-compose.yml's one-shot set-up of a secured Elasticsearch: Kibana's password, and a
# `containertrail` user whose role can manage only our templates, policies and data streams.
# `delete`: a replayed document stored a second time in a new write index, right after a
# rollover, is deleted again from there (sinks/elasticsearch/bulk.py).
# Passwords come from the environment; nothing is written to disk.
set -euo pipefail
: "${ES_URL:?}" "${ELASTIC_PASSWORD:?}" "${KIBANA_PASSWORD:?}" "${CTRAIL_ES_PASSWORD:?}"

es() {  # es METHOD PATH BODY
    curl -fsS -u "elastic:${ELASTIC_PASSWORD}" -X "$1" "${ES_URL}$2" \
        -H 'Content-Type: application/json' -d "$3" >/dev/null
}

es POST /_security/user/kibana_system/_password "{\"password\": \"${KIBANA_PASSWORD}\"}"
es PUT /_security/role/containertrail '{
  "cluster": ["monitor", "manage_index_templates", "manage_ilm"],
  "indices": [{
    "names": ["logs-containertrail.*", ".ds-logs-containertrail.*"],
    "privileges": ["create_doc", "delete", "read", "view_index_metadata", "auto_configure", "manage"]
  }]
}'
es PUT /_security/user/containertrail "{\"password\": \"${CTRAIL_ES_PASSWORD}\", \"roles\": [\"containertrail\"]}"
echo "elasticsearch-setup: kibana_system password set; user containertrail ready"
