-- PostgreSQL: as ../0001_leases.sql with BIGINT for every INTEGER (SQLite's INTEGER is
-- 64-bit, PostgreSQL's is 32). Migrations 0002 and 0003 are shared with SQLite as they are.
-- Leases: one row per lease, active or tombstoned.
-- `slug` and `host` are the public values: the live name while active, the tombstone
-- (`released-<id>`, `released-<id>.invalid`, …) afterwards, so the unique constraints
-- free a name the moment its lease ends. The names asked for are kept for audit.
CREATE TABLE leases (
    lease_id       TEXT    PRIMARY KEY NOT NULL,
    slug           TEXT    NOT NULL UNIQUE,
    host           TEXT    NOT NULL UNIQUE,
    original_slug  TEXT    NOT NULL,
    original_host  TEXT    NOT NULL,
    owner          TEXT    NOT NULL,
    edge_bind_port BIGINT  NOT NULL,
    state          TEXT    NOT NULL CHECK (state IN ('active', 'released', 'expired')),
    ttl_seconds    BIGINT  NOT NULL,
    created_at     BIGINT  NOT NULL,
    updated_at     BIGINT  NOT NULL,
    expires_at     BIGINT  NOT NULL
);

-- No two active leases share a port.
CREATE UNIQUE INDEX leases_active_port ON leases (edge_bind_port) WHERE state = 'active';
CREATE INDEX leases_owner_state ON leases (owner, state);
CREATE INDEX leases_active_expiry ON leases (expires_at) WHERE state = 'active';
CREATE INDEX leases_tombstone_age ON leases (updated_at) WHERE state <> 'active';
