-- HCP schema, version 1. Ids compare in byte order (COLLATE "C"), like HCP's in-memory store.
-- Records are JSON documents beside the columns that are queried, locked or constrained.

CREATE TABLE vms (
    id         text COLLATE "C" PRIMARY KEY,
    project    text COLLATE "C" NOT NULL,
    name       text COLLATE "C" NOT NULL,
    generation bigint NOT NULL,
    doc        jsonb NOT NULL,
    CONSTRAINT vms_project_name UNIQUE (project, name)
);
CREATE INDEX vms_project_id ON vms (project, id);

-- Per-project usage of the VMs not being deleted, kept with every VM write in the same
-- transaction. numeric: sizes reported by hosts may add up past 64 bits.
CREATE TABLE project_usage (
    project    text COLLATE "C" PRIMARY KEY,
    vms        numeric NOT NULL DEFAULT 0,
    vcpus      numeric NOT NULL DEFAULT 0,
    memory_mib numeric NOT NULL DEFAULT 0
);

-- lease_holder, lease_expires_at and fencing_token are reserved for job leases (a worker's
-- claim, its expiry, and a token that only grows); nothing writes them yet.
CREATE TABLE jobs (
    id               text COLLATE "C" PRIMARY KEY,
    project          text COLLATE "C" NOT NULL,
    vm_id            text COLLATE "C" NOT NULL,
    state            text NOT NULL,
    terminal         boolean NOT NULL,
    finished_at      timestamptz,
    generation       bigint NOT NULL,
    next_log_seq     bigint NOT NULL DEFAULT 1,
    doc              jsonb NOT NULL,
    lease_holder     text,
    lease_expires_at timestamptz,
    fencing_token    bigint NOT NULL DEFAULT 0
);
CREATE INDEX jobs_project_id ON jobs (project, id);
CREATE INDEX jobs_vm_id ON jobs (vm_id, id);
CREATE INDEX jobs_unfinished ON jobs (id) WHERE NOT terminal;
CREATE INDEX jobs_finished_at ON jobs (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE job_logs (
    job_id text COLLATE "C" NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq    bigint NOT NULL,
    doc    jsonb NOT NULL,
    PRIMARY KEY (job_id, seq)
);

CREATE TABLE idempotency (
    project     text COLLATE "C" NOT NULL,
    principal   text COLLATE "C" NOT NULL,
    operation   text COLLATE "C" NOT NULL,
    key         text COLLATE "C" NOT NULL,
    fingerprint text NOT NULL,
    vm_id       text COLLATE "C" NOT NULL,
    job_id      text COLLATE "C" NOT NULL,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (project, principal, operation, key)
);
CREATE INDEX idempotency_created_at ON idempotency (created_at);

-- Events are numbered from one counter row, in the transaction that inserts them, so numbers
-- have no gaps and commit in order: a reader after N never misses an event.
CREATE TABLE event_counter (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    next_seq bigint NOT NULL
);
INSERT INTO event_counter (only_row, next_seq) VALUES (true, 1);

CREATE TABLE events (
    seq     bigint PRIMARY KEY,
    project text COLLATE "C",
    vm_id   text COLLATE "C",
    doc     jsonb NOT NULL
);
CREATE INDEX events_project ON events (project, seq);
CREATE INDEX events_vm ON events (vm_id, seq);
