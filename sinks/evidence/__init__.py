"""The evidence archive: an append-only, hash-chained, optionally signed copy of every stored
event and alert, for PCI DSS 10.3 / 10.5 and SOC 2 CC7 (see archive.py for the format).

Off when the `evidence:` section is absent. The config models live here; importing this module
does not import `cryptography` (only a configured signing key needs it).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)

from ctrail.secrets import SecretRef

if TYPE_CHECKING:
    from sinks.evidence.archive import EvidenceArchive


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EvidenceRetentionConfig(_Section):
    """Days each data class is kept after its hour ends; expiry is the only way records leave
    the archive, and each expiry leaves a signed tombstone in the chain. PCI DSS 10.5.1 asks
    for at least 12 months of audit trail."""

    audit_days: PositiveInt = Field(400, description="Kubernetes audit events and our own "
                                                     "audit trail (containertrail.audit).")
    runtime_days: PositiveInt = Field(400, description="Runtime, registry and log events.")
    alerts_days: PositiveInt = Field(400, description="Alerts.")

    def days(self, data_class: str) -> int:
        return int(getattr(self, f"{data_class}_days"))


class LegalHold(_Section):
    """Keep matching segments past their expiry: a time range, a subject, or both."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str = Field(description="Why, e.g. a case number; shown when a segment is kept.")
    time_from: datetime | None = Field(None, alias="from", description="Inclusive.")
    time_to: datetime | None = Field(None, alias="to", description="Exclusive.")
    subject: str | None = Field(
        None, pattern=r"^[\w@.]+:.+$",
        description="FIELD:VALUE, e.g. user.name:alice or kubernetes.namespace:payments: "
                    "segments holding any record with that value are kept.")

    @model_validator(mode="after")
    def _says_what(self) -> "LegalHold":
        if self.time_from is None and self.time_to is None and self.subject is None:
            raise ValueError("a legal hold needs from/to, a subject, or both")
        return self


class EvidenceRemoteConfig(_Section):
    """A copy of every sealed segment, index, manifest and timestamp token in S3-compatible
    object storage (AWS S3, MinIO, Ceph RGW) under S3 Object Lock, uploaded by `ctrail run`;
    `ctrail evidence verify --remote` checks it, `ctrail evidence restore` reads it back."""

    type: Literal["s3"] = "s3"
    bucket: str = Field(min_length=3, description="A bucket created with Object Lock enabled.")
    endpoint_url: str | None = Field(None, description="For MinIO or Ceph, e.g. "
                                                       "https://minio.example:9000 (default AWS).")
    region: str = "us-east-1"
    prefix: str = Field("", description="Key prefix, e.g. prod-eu/evidence/.")
    lock_mode: Literal["COMPLIANCE", "GOVERNANCE"] = Field(
        "COMPLIANCE", description="COMPLIANCE: nobody can delete or shorten the lock, root "
                                  "included (SEC 17a-4); GOVERNANCE: s3:BypassGovernanceRetention "
                                  "can.")
    retain_days: PositiveInt = Field(400, description="Each object is locked this long from "
                                                      "its upload. Legal holds are mirrored.")
    access_key_id: SecretRef | None = Field(None, description="Default: boto3's own chain "
                                                              "(environment, instance role).")
    secret_access_key: SecretRef | None = None
    timeout_secs: PositiveFloat = 30.0
    max_attempts: PositiveInt = Field(5, description="Tries of each request (exponential "
                                                     "backoff); a failed pass is retried later.")

    @model_validator(mode="after")
    def _both_keys(self) -> "EvidenceRemoteConfig":
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("give both access_key_id and secret_access_key, or neither")
        return self


class EvidenceTimestampConfig(_Section):
    """RFC 3161 trusted timestamps: each manifest's hash is stamped by a Time Stamping
    Authority when it is sealed; the token is kept beside the manifest and checked by
    `ctrail evidence verify` and by an export's standalone verifier. Needs `openssl`."""

    url: str = Field(pattern=r"^https?://", description="The TSA's RFC 3161 HTTP endpoint.")
    ca_file: Path | None = Field(None, description="The TSA's CA certificate(s), PEM: a token "
                                                   "must chain to it.")
    tsa_cert: Path | None = Field(None, description="The TSA's own certificate, PEM: a token "
                                                    "must be signed by exactly it.")
    timeout_secs: PositiveFloat = 10.0

    @model_validator(mode="after")
    def _trusts_someone(self) -> "EvidenceTimestampConfig":
        if self.ca_file is None and self.tsa_cert is None:
            raise ValueError("give ca_file, tsa_cert or both: whom a token must come from")
        return self


class EvidenceConfig(_Section):
    """Archive every stored event and alert in DATA_DIR/evidence (the `evidence` stage)."""

    path: Path | None = Field(None, description="Archive directory (default DATA_DIR/evidence).")
    bucket_secs: PositiveInt = Field(3600, description="One segment per data class and this "
                                                       "many seconds of @timestamp.")
    seal_after_secs: int = Field(
        900, ge=0, description="Seal a bucket's segment this long after the bucket ends; "
                               "later arrivals for it go to a late segment, chained too.")
    signing_key: SecretRef | None = Field(
        None, description="Ed25519 private key (PEM, PKCS#8) that signs every manifest, as a "
                          "reference: {file: PATH} or {env: NAME}. Unsigned when absent.")
    public_key: Path | None = Field(
        None, description="The Ed25519 public key (PEM) that `verify --store` trusts, kept where "
                          "the host cannot change it: an archive re-signed with another key "
                          "fails. Default: the public half of signing_key.")
    public_key_sha256: str | None = Field(
        None, pattern=r"^[0-9a-f]{64}$",
        description="Pin by fingerprint instead (SHA-256 of the key's DER form, as `verify` "
                    "prints it): the key beside the archive is trusted only when it matches.")
    retention: EvidenceRetentionConfig = EvidenceRetentionConfig()
    legal_holds: tuple[LegalHold, ...] = ()
    timestamp: EvidenceTimestampConfig | None = Field(
        None, description="Stamp every sealed manifest by an RFC 3161 TSA.")
    remote: EvidenceRemoteConfig | None = Field(
        None, description="Copy sealed evidence to object storage under a retention lock.")
    expire_schedule: str = Field("30 3 * * *", description="Cron schedule of the expiry run "
                                                             "inside `ctrail run`.")

    @field_validator("expire_schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        from sinks.reports import cron_trigger
        cron_trigger(value)
        return value

    def root(self, data_dir: Path) -> Path:
        return self.path or data_dir / "evidence"

    def build(self, data_dir: Path) -> EvidenceArchive:
        from sinks.evidence.archive import EvidenceArchive

        return EvidenceArchive(self, self.root(data_dir))


__all__ = ["EvidenceConfig", "EvidenceRemoteConfig", "EvidenceRetentionConfig",
           "EvidenceTimestampConfig", "LegalHold"]
