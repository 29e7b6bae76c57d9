-- HCP schema, version 7: a project's usage in 16 shard rows instead of one. Every VM write
-- changed the project's single usage row, so all writes to one project (every create, resize
-- and delete) waited for each other's commits on that row. A write without a quota check now
-- adds its change to one shard; a write checked against a quota locks all of the project's
-- shards, sums them and adds to one. A shard may hold a negative part; the sum never is.
ALTER TABLE project_usage ADD COLUMN shard smallint NOT NULL DEFAULT 0;
ALTER TABLE project_usage DROP CONSTRAINT project_usage_pkey;
ALTER TABLE project_usage ADD PRIMARY KEY (project, shard);
ALTER TABLE project_usage ADD CONSTRAINT project_usage_shard CHECK (shard >= 0 AND shard < 16);
