-- The edges sharing the database: where the other edges reach each one's Caddy, to
-- forward requests for the hosts whose tunnels it holds (NULL: nowhere), and when its
-- serve last wrote here.
CREATE TABLE edges (
    edge_id TEXT   PRIMARY KEY NOT NULL,
    url     TEXT,
    seen_at BIGINT NOT NULL
);
