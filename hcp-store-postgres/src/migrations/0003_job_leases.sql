-- HCP schema, version 3: job leases. lease_holder, lease_expires_at and fencing_token (reserved
-- in version 1) now hold a worker's claim: who holds the job, until when, and a token that only
-- grows with each claim. A claim locks the unfinished jobs of the job's VM (this index finds
-- them) and grants only the oldest, so one job per VM runs at a time, in order.
CREATE INDEX jobs_vm_unfinished ON jobs (vm_id, id) WHERE NOT terminal;
-- Pollers look for unfinished jobs whose lease lapsed (or that were never claimed).
CREATE INDEX jobs_lease_expires ON jobs (lease_expires_at) WHERE NOT terminal;
