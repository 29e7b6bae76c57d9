-- Server groups: a project's named sets of VMs placed by one policy. Members are not stored
-- here: they are the VMs whose spec names the group (doc->'spec'->>'server_group'), so a VM
-- leaves its group when its row is deleted. A submit that inserts a member locks the group's
-- row first, so members are added (and the group deleted) one transaction at a time.
CREATE TABLE server_groups (
    id         text COLLATE "C" PRIMARY KEY,
    project    text COLLATE "C" NOT NULL,
    name       text COLLATE "C" NOT NULL,
    generation bigint NOT NULL,
    doc        jsonb NOT NULL,
    UNIQUE (project, name)
);
CREATE INDEX server_groups_project_id ON server_groups (project, id);
CREATE INDEX vms_server_group ON vms ((doc->'spec'->>'server_group'), id)
    WHERE doc->'spec'->>'server_group' IS NOT NULL;
