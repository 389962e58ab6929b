"""CT-OPS-003's eyes on the evidence archive: the scheduler's sealing pass, and a verification of
what it sealed, report their failures to the self-watch (ctrail.runtime.self_watch.PROBLEMS),
which raises the alert.

Verification after each pass checks the whole chain of manifests (small: one JSON file per
segment) and the segments sealed since the last pass (hashing every segment each minute would
grow with the archive; `ctrail evidence verify --store` checks them all). The first pass of a
process checks the chain only and starts from the newest seal. Each finding is reported once
per process: a tampered segment stays tampered, and one alert says so.
"""

from __future__ import annotations

from typing import Any

from ctrail.runtime.self_watch import PROBLEMS, Problems


class EvidenceWatch:
    def __init__(self, problems: Problems = PROBLEMS) -> None:
        self.problems = problems
        self.verified_upto: int | None = None       # the newest seq verified
        self.reported: set[str] = set()

    def seal(self, archive: Any) -> None:
        """archive.seal_due(), then a verification of what is new. Raises what sealing
        raised, after reporting it."""
        try:
            archive.seal_due()
        except Exception as exc:
            self.problems.report("seal", "evidence archive", f"{type(exc).__name__}: {exc}")
            raise
        self.verify(archive)

    def verify(self, archive: Any) -> None:
        from sinks.evidence.verify import verify

        newest = max((m["seq"] for sealed in archive.sealed.values() for m in sealed), default=0)
        start = newest if self.verified_upto is None else self.verified_upto
        try:
            result = verify(archive.root, only_seqs=set(range(start + 1, newest + 1)))
        except Exception as exc:            # an archive verify cannot even read is failing too
            self.problems.report("verify", "evidence archive", f"{type(exc).__name__}: {exc}")
            return
        self.verified_upto = newest
        for finding in result.findings:
            if str(finding) not in self.reported:
                self.reported.add(str(finding))
                subject = f"segment {finding.seq}" if finding.seq else "evidence archive"
                self.problems.report("verify", subject, str(finding))
