-- HCP schema, version 6: leader leases for the singleton duties (inventory refresh and drift
-- repair, retention purges). One row per duty group: who holds it, until when (the database's
-- clock), and a fencing token that grows by one at each change of holder and never goes back
-- (a released lease is expired, not deleted, so its token stays).
CREATE TABLE leader_leases (
    name       text COLLATE "C" PRIMARY KEY,
    holder     text NOT NULL,
    token      bigint NOT NULL,
    expires_at timestamptz NOT NULL
);
