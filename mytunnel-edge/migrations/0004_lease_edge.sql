-- Several edges may share one database: each lease records the edge that holds its tunnel
-- (MYTUNNEL_EDGE_ID, the edge it was allocated through), and each edge routes its own.
-- Leases from before any edge had an id belong to the default one.
ALTER TABLE leases ADD COLUMN edge_id TEXT NOT NULL DEFAULT 'local';
CREATE INDEX leases_active_edge ON leases (edge_id) WHERE state = 'active';
