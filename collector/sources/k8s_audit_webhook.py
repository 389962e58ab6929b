"""Source: kube-apiserver's audit webhook backend (POSTs of an audit.k8s.io EventList).

The listener (ctrail/runtime/http.py) answers only after the batch's events, or its dead
letter, are durable on the bus: 200 then, 503 if that takes longer than `ack_timeout_secs` (the
API server retries the batch for about 80 s). A bearer token is required by default (the
`token` of the kubeconfig given to --audit-webhook-config-file), or a client certificate when
`client_ca_file` is set; a body over `max_body_bytes` gets 413 and a full intake queue 429.
The API server sends that token (or certificate) only to an https server: serve TLS
(`tls_cert_file`) and give its CA as the kubeconfig's certificate-authority-data.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from pydantic import Field, PositiveInt

from ctrail.runtime.http import HttpListener, ListenerConfig

log = logging.getLogger(__name__)


class K8sAuditWebhookConfig(ListenerConfig):
    """Receive the API server's audit webhook (--audit-webhook-config-file points here)."""

    type: Literal["k8s_audit_webhook"] = "k8s_audit_webhook"
    port: int = Field(8480, ge=0, le=65535)
    # The API server batches up to 400 events (--audit-webhook-batch-max-size), each up to
    # a few KB at RequestResponse level.
    max_body_bytes: PositiveInt = 16 * 1024 * 1024

    @property
    def parser_name(self) -> str:
        return "k8s-audit"

    def build(self, name: str, data_dir: Path, max_record_bytes: int) -> HttpListener:
        if self.tls_cert_file is None and (self.token is not None or self.tokens):
            # client-go reads a kubeconfig's credentials only for an https server
            # (tools/clientcmd/client_config.go), so every batch would be answered 401.
            log.warning("kube-apiserver sends its webhook kubeconfig's token only over https: "
                        "without tls_cert_file this source refuses every batch it sends.",
                        extra={"source": name})
        return super().build(name, data_dir, max_record_bytes)
