"""Jobs accepted but not started yet, counted per owner: what the pending-job caps read.

In memory, so that a submission checks its caps without a store query. The service adds a job
under the caps before it writes it; the local queue adds the pending jobs it finds at start and
removes a job when it leaves pending (started, or found cancelled); a cancel removes it too. Every
operation is idempotent, so a job removed twice or re-added by a retry is counted once. Bounded:
one entry per pending job, and the caps bound how many a submission may add.
"""

from __future__ import annotations


class PendingJobs:
    def __init__(self) -> None:
        self._owners: dict[str, str | None] = {}  # job id -> owner (None without authentication)
        self._per_owner: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._owners)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._owners

    def count(self, owner: str) -> int:
        """Pending jobs of ``owner``."""
        return self._per_owner.get(owner, 0)

    def add(self, job_id: str, owner: str | None) -> None:
        if job_id in self._owners:
            return
        self._owners[job_id] = owner
        if owner is not None:
            self._per_owner[owner] = self._per_owner.get(owner, 0) + 1

    def discard(self, job_id: str) -> None:
        if job_id not in self._owners:
            return
        owner = self._owners.pop(job_id)
        if owner is not None:
            left = self._per_owner[owner] - 1
            if left:
                self._per_owner[owner] = left
            else:
                del self._per_owner[owner]  # no entry is kept for owners with nothing pending
