-- HCP schema, version 8: what the VMs bound to each host hold, kept with every VM write in the
-- same transaction, so a submission checks a host's room in its own transaction (replicas that
-- place at the same moment cannot overfill a host). Spread over 16 shard rows per host like
-- project_usage: a write without a room check adds to one shard; a checked write locks all of
-- the host's shards, sums them and adds to one. A VM holds its host while its create is in
-- flight, while it is expected to exist and while it is still there.
CREATE TABLE host_usage (
    provider   text COLLATE "C" NOT NULL,
    host       text COLLATE "C" NOT NULL,
    shard      smallint NOT NULL CHECK (shard >= 0 AND shard < 16),
    vms        numeric NOT NULL DEFAULT 0,
    vcpus      numeric NOT NULL DEFAULT 0,
    memory_mib numeric NOT NULL DEFAULT 0,
    PRIMARY KEY (provider, host, shard)
);

-- The VMs stored before this version.
INSERT INTO host_usage (provider, host, shard, vms, vcpus, memory_mib)
SELECT doc->'binding'->>'provider', doc->'binding'->>'host', 0, count(*),
       sum((doc->'resources'->>'vcpus')::numeric),
       sum((doc->'resources'->>'memory_mib')::numeric)
FROM vms
WHERE doc->>'desired' IN ('PENDING', 'ACTIVE') OR (doc->>'present')::boolean
GROUP BY 1, 2;
