-- HCP schema, version 2: the columns VM lists filter and sort by, copied from the document
-- with every VM write. created_us is the creation time in microseconds since the Unix epoch
-- (HCP compares creation times at that precision); state and power are the serde names.
ALTER TABLE vms
    ADD COLUMN created_us bigint,
    ADD COLUMN state      text,
    ADD COLUMN power      text;
UPDATE vms SET
    created_us = floor(extract(epoch FROM (doc->>'created_at')::timestamptz) * 1000000)::bigint,
    state      = doc->>'desired',
    power      = doc->>'power';
ALTER TABLE vms
    ALTER COLUMN created_us SET NOT NULL,
    ALTER COLUMN state SET NOT NULL,
    ALTER COLUMN power SET NOT NULL;

-- Sorted pages seek by (key, id) within a project or across all of them.
CREATE INDEX vms_project_created ON vms (project, created_us, id);
CREATE INDEX vms_created ON vms (created_us, id);
CREATE INDEX vms_name ON vms (name, id);
-- Tag filters are containment (every asked tag present with its value).
CREATE INDEX vms_tags ON vms USING gin ((doc->'spec'->'tags') jsonb_path_ops);
